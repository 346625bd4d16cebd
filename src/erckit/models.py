"""Model folders: train one from a recipe, load it back, label dialogues (predictions.jsonl contract).

A model folder holds `erckit_model.json` (type, recipe, labels, training summary) next to its weights.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from erckit import __version__
from erckit.atomic import write_text_atomic
from erckit.cache import sha256
from erckit.config import ConfigError, RunConfig, from_dict, to_dict
from erckit.data import DataError, Dialogue, gold_labels, iter_utterances
from erckit.formats import read_dialogues
from erckit.formats.encoding import read_json
from erckit.labels import LABELS
from erckit.metrics import scores
from erckit.predictions import Prediction, from_probabilities

MODEL_FILE = "erckit_model.json"
OUTPUT_NAMES = (MODEL_FILE, "training.png", "model.safetensors", "tfidf.json", "tfidf.safetensors")  # checked by train


def read_model_info(folder: str | Path) -> dict:
    """The erckit_model.json of a model folder: an object naming the model type and its recipe."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise DataError(folder, None, f"not an erckit model folder (no {MODEL_FILE})")
    info = read_json(path)
    if not isinstance(info, dict) or not isinstance(info.get("type"), str) or not isinstance(info.get("config"), dict):
        raise DataError(path, None, 'expected an object with "type" and "config" (written by erckit train)')
    return info


def data_digest(config: RunConfig) -> dict[str, str]:
    """sha256 of the training and validation files: a finished run is reused only for the same data."""
    return {split: sha256(Path(path)) for split in ("train", "validation") if (path := getattr(config.data, split))}


def _has_progress(out: Path) -> bool:
    """Whether an unfinished run left anything to resume (else a new recipe may start over in its folder)."""
    return (out / "checkpoint" / "trainer_state.json").exists() or any(out.glob("checkpoint-*"))


def _check_previous(out: Path, config: RunConfig, digest: dict[str, str]) -> dict | None:
    """The finished identical run in `out` (reused), None to (re)start, or a refusal."""
    if not (out / MODEL_FILE).exists():
        return None
    previous = read_model_info(out)
    if not previous.get("finished") and not _has_progress(out):
        return None  # a run stopped before its first checkpoint: nothing to keep
    if previous.get("config") != to_dict(config):
        raise ConfigError(f"{out} holds a run of another recipe; choose another out= or remove it")
    if "data_sha256" not in previous:
        raise ConfigError(f"{out} holds a run that recorded no hash of its data (an older erckit), so it cannot be "
                          "reused safely; choose another out= or remove it")
    if previous.get("data_sha256") != digest:
        changed = [s for s in ("train", "validation") if (previous.get("data_sha256") or {}).get(s) != digest.get(s)]
        raise ConfigError(f"{out} holds a run trained on other data (the content of data.{', data.'.join(changed)} "
                          "differs); choose another out= or remove it")
    return previous if previous.get("finished") else None


def _read_split(config: RunConfig, split: str, *, labelled: bool) -> list[Dialogue] | None:
    path = getattr(config.data, split)
    if path is None:
        return None
    dialogues = read_dialogues(path, config.data.format, text_column=config.data.text_column)
    if labelled:
        gold_labels(dialogues, path)  # refuses unlabelled utterances
    return dialogues


def train(config: RunConfig) -> dict:
    """Train the recipe's model into `config.out`; a finished identical run is reused, not redone (the
    returned info then has `reused`: True)."""
    out = Path(config.out)
    if config.data.train is None:
        raise ConfigError("data.train is required for training")
    if config.model == "bert_bigru" and config.train.patience and config.data.validation is None:
        raise ConfigError("train.patience (early stopping) needs data.validation; give one, or set train.patience=0")
    train_dialogues = _read_split(config, "train", labelled=True)
    validation = _read_split(config, "validation", labelled=True)
    digest = data_digest(config)
    if previous := _check_previous(out, config, digest):
        print(f"{out} already holds this finished run; reusing it")
        return previous | {"reused": True}
    from erckit.llm.distributed import is_main_process  # a multi-process launch: one process writes

    info = {"type": config.model, "labels": list(LABELS), "erckit_version": __version__, "config": to_dict(config),
            "data_sha256": digest}
    if is_main_process():
        write_text_atomic(out / MODEL_FILE, json.dumps(info | {"finished": False}, indent=2) + "\n")
    if config.model == "tfidf":
        from erckit.tfidf import TfidfClassifier

        started = time.perf_counter()
        model = TfidfClassifier.train(train_dialogues, config.tfidf, config.train.seed)
        model.save(out)
        summary = {"train_seconds": time.perf_counter() - started}
        if validation:
            result = scores(list(gold_labels(validation, config.data.validation).values()),
                            [LABELS[i] for i in model.probabilities(validation).argmax(1)])
            summary |= {"val_macro_f1": result["macro_f1"], "val_weighted_f1": result["weighted_f1"]}
    elif config.model == "bert_bigru":
        from erckit.encoder.train import train_bert_bigru

        state = train_bert_bigru(config, train_dialogues, validation, out)
        summary = {k: state[k] for k in ("best_epoch", "best_macro_f1", "train_seconds", "history", "stopped_early")}
        summary["epochs_run"] = state["epoch"]
        if not validation:
            summary["best_macro_f1"] = None  # no validation: the last epoch is kept
    else:
        from erckit.llm.train import train_llm

        summary = train_llm(config, train_dialogues, validation, out)
    info |= {"finished": True, "summary": summary}
    if is_main_process():  # after train_llm's barrier: best/ is written
        write_text_atomic(out / MODEL_FILE, json.dumps(info, indent=2) + "\n")
    return info


def store_calibration(folder: str | Path, offsets: dict[str, float] | None, report: dict) -> None:
    """Keep calibration offsets in the model folder (`predict` applies them); None removes stored ones."""
    info = read_model_info(folder) | {"calibration": offsets, "calibration_report": report}
    if offsets is None:
        del info["calibration"]
    write_text_atomic(Path(folder) / MODEL_FILE, json.dumps(info, indent=2) + "\n")


def llm_settings(folder: str | Path) -> dict:
    """How an erckit LLM run predicts: its run record (erckit.llm.record, in best/), the weights to load
    (base + best adapter, or the best full model) and its stored calibration."""
    from erckit.llm.record import BEST, load_run_record, weights_of

    folder = Path(folder)
    info = read_model_info(folder)
    record = load_run_record(folder) if info.get("finished") else None
    if record is None:
        raise ConfigError(f"{folder}: the LLM run has not finished (no run record in {BEST}/)")
    model, adapter = weights_of(record, folder / BEST)
    return {"record": record, "model": model, "adapter": adapter, "calibration": info.get("calibration")}


@dataclass
class Predictor:
    """A trained model folder loaded once: labels any number of dialogues without reloading its weights."""

    folder: Path
    kind: str
    score: Callable[[list[Dialogue], bool], np.ndarray]  # (dialogues, progress) -> [utterances, 7]
    offsets: np.ndarray | None  # calibration stored in the folder (erckit calibrate), in LABELS order

    def probabilities(self, dialogues: list[Dialogue], *, progress: bool = False) -> np.ndarray:
        """[utterances, 7] label probabilities in file order (before calibration)."""
        if not dialogues:
            return np.zeros((0, len(LABELS)))
        return self.score(dialogues, progress)

    def predict(self, dialogues: list[Dialogue], *, progress: bool = False) -> list[Prediction]:
        """One prediction per utterance, calibration offsets applied if the model has them."""
        probs = self.probabilities(dialogues, progress=progress)
        return from_probabilities([u.id for u in iter_utterances(dialogues)], probs, self.offsets)


def load(folder: str | Path, *, best_so_far: bool = False) -> Predictor:
    """Load a trained model folder once. An unfinished run is refused unless `best_so_far` (bert_bigru runs:
    the best epoch saved so far)."""
    folder = Path(folder)
    info = read_model_info(folder)
    offsets = info.get("calibration")
    offsets = np.array([offsets[label] for label in LABELS]) if offsets else None
    if info["type"] == "fusion":
        from erckit.fusion import fused_scorer

        return Predictor(folder, "fusion", fused_scorer(folder, info["config"]), offsets)
    config = from_dict(RunConfig, info["config"], str(folder / MODEL_FILE))
    if not info.get("finished") and not (best_so_far and info["type"] == "bert_bigru"):
        hint = " or predict with its best epoch so far (--best-so-far)" if info["type"] == "bert_bigru" else ""
        raise ConfigError(f"{folder}: the run has not finished; rerun its train command to resume it{hint}")
    if info["type"] == "tfidf":
        from erckit.tfidf import TfidfClassifier

        tfidf = TfidfClassifier.load(folder)
        return Predictor(folder, "tfidf", lambda dialogues, progress: tfidf.probabilities(dialogues), offsets)
    if info["type"] == "bert_bigru":
        from erckit.encoder.model import load_classifier
        from erckit.encoder.model import predict_probabilities as encoder_probabilities

        model, tokenizer = load_classifier(folder, config.encoder, config.classifier)
        return Predictor(folder, "bert_bigru", lambda dialogues, progress: encoder_probabilities(
            model, tokenizer, dialogues, config.encoder, progress=progress), offsets)
    if info["type"] == "llm":
        from erckit.llm.chat import get_template
        from erckit.llm.dialogue_form import score_dialogues
        from erckit.llm.loading import load_model
        from erckit.llm.scoring import softmax

        settings = llm_settings(folder)
        record = settings["record"]
        model, tokenizer = load_model(settings["model"], adapter=settings["adapter"],
                                      trust_remote_code=record.trust_remote_code)
        return Predictor(folder, "llm", lambda dialogues, progress: softmax(score_dialogues(
            model, tokenizer, dialogues, get_template(record.template), record.prompt,
            batch_size=config.llm.eval_batch_size, pack_tokens=config.llm.pack_tokens, progress=progress,
            max_length=record.max_length,
        )), offsets)
    raise ConfigError(f"{folder}: unknown model type {info['type']!r}")


def predict_probabilities(
    folder: str | Path, dialogues: list[Dialogue], *, progress: bool = True, best_so_far: bool = False
) -> np.ndarray:
    """[utterances, 7] label probabilities from a trained model folder, in file order (see `load`)."""
    return load(folder, best_so_far=best_so_far).probabilities(dialogues, progress=progress)


def unfinished_epoch(folder: str | Path) -> dict | None:
    """For an unfinished bert_bigru run: the epoch its saved weights come from (see `best_so_far`);
    None for a finished run. Raises ValueError for other unfinished runs or when no epoch has finished."""
    info = read_model_info(folder)
    if info.get("finished"):
        return None
    if info["type"] != "bert_bigru":
        raise ConfigError(f"{folder}: the run has not finished; only bert_bigru runs predict from an unfinished run")
    from erckit.encoder.train import best_so_far

    return best_so_far(Path(folder)) | {"epochs": info["config"]["train"]["epochs"]}


def predict(
    folder: str | Path, dialogues: list[Dialogue], *, progress: bool = True, best_so_far: bool = False
) -> list[Prediction]:
    """One prediction per utterance, with label probabilities; calibration offsets applied if the model has them."""
    return load(folder, best_so_far=best_so_far).predict(dialogues, progress=progress)
