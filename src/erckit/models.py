"""Model folders: train one from a recipe, load it back, label dialogues (predictions.jsonl contract).

A model folder holds `erckit_model.json` (type, recipe, labels, training summary) next to its weights.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from erckit import __version__
from erckit.atomic import write_text_atomic
from erckit.config import ConfigError, RunConfig, from_dict, to_dict
from erckit.data import DataError, Dialogue, gold_labels, iter_utterances
from erckit.formats import read_dialogues
from erckit.labels import LABELS
from erckit.metrics import scores
from erckit.predictions import Prediction, from_probabilities

MODEL_FILE = "erckit_model.json"


def read_model_info(folder: str | Path) -> dict:
    """The erckit_model.json of a model folder."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise DataError(folder, None, f"not an erckit model folder (no {MODEL_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


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
    if (out / MODEL_FILE).exists():
        previous = read_model_info(out)
        if previous.get("config") == to_dict(config) and previous.get("finished"):
            print(f"{out} already holds this finished run; reusing it")
            return previous | {"reused": True}
        if previous.get("config") != to_dict(config):
            raise ConfigError(f"{out} holds a run of another recipe; choose another out= or remove it")
    if config.data.train is None:
        raise ConfigError("data.train is required for training")
    if config.model == "bert_bigru" and config.train.patience and config.data.validation is None:
        raise ConfigError("train.patience (early stopping) needs data.validation; give one, or set train.patience=0")
    train_dialogues = _read_split(config, "train", labelled=True)
    validation = _read_split(config, "validation", labelled=True)
    info = {"type": config.model, "labels": list(LABELS), "erckit_version": __version__, "config": to_dict(config)}
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
    write_text_atomic(out / MODEL_FILE, json.dumps(info, indent=2) + "\n")
    return info


def store_calibration(folder: str | Path, offsets: dict[str, float] | None, report: dict) -> None:
    """Keep calibration offsets in the model folder (`predict` applies them); None removes stored ones."""
    info = read_model_info(folder) | {"calibration": offsets, "calibration_report": report}
    if offsets is None:
        del info["calibration"]
    write_text_atomic(Path(folder) / MODEL_FILE, json.dumps(info, indent=2) + "\n")


def llm_settings(folder: str | Path) -> dict:
    """How an erckit LLM run predicts: base model and best adapter (or the best full model), template,
    prompts as trained, stored calibration."""
    from erckit.prompts import PromptConfig

    folder = Path(folder)
    info = read_model_info(folder)
    config = from_dict(RunConfig, info["config"], str(folder / MODEL_FILE))
    prompt = info.get("summary", {}).get("prompt")
    if prompt is None:
        raise ConfigError(f"{folder}: the LLM run has not finished (no prompt settings recorded)")
    best = folder / "best"
    full = not (best / "adapter_config.json").exists()  # llm.finetuning=full saves a whole model there
    return {
        "model": str(best) if full else config.llm.model, "adapter": None if full else str(best),
        "template": config.llm.template,
        "prompts": PromptConfig(**prompt), "trust_remote_code": config.llm.trust_remote_code,
        "max_length": config.llm.max_length, "calibration": info.get("calibration"),
    }


def predict_probabilities(
    folder: str | Path, dialogues: list[Dialogue], *, progress: bool = True, best_so_far: bool = False
) -> np.ndarray:
    """[utterances, 7] label probabilities from a trained model folder, in file order.

    An unfinished run is refused unless `best_so_far` (bert_bigru runs: the best epoch saved so far)."""
    folder = Path(folder)
    info = read_model_info(folder)
    config = from_dict(RunConfig, info["config"], str(folder / MODEL_FILE))
    if not info.get("finished") and not (best_so_far and info["type"] == "bert_bigru"):
        hint = " or predict with its best epoch so far (--best-so-far)" if info["type"] == "bert_bigru" else ""
        raise ConfigError(f"{folder}: the run has not finished; rerun its train command to resume it{hint}")
    if info["type"] == "tfidf":
        from erckit.tfidf import TfidfClassifier

        return TfidfClassifier.load(folder).probabilities(dialogues)
    if info["type"] == "bert_bigru":
        from erckit.encoder.model import load_classifier
        from erckit.encoder.model import predict_probabilities as encoder_probabilities

        model, tokenizer = load_classifier(folder, config.encoder, config.classifier)
        return encoder_probabilities(model, tokenizer, dialogues, config.encoder, progress=progress)
    if info["type"] == "llm":
        from erckit.llm.chat import get_template
        from erckit.llm.loading import load_model
        from erckit.llm.scoring import label_log_probs, softmax
        from erckit.prompts import emotion_examples

        settings = llm_settings(folder)
        model, tokenizer = load_model(settings["model"], adapter=settings["adapter"],
                                      trust_remote_code=settings["trust_remote_code"])
        prompts = [e.prompt for e in emotion_examples(dialogues, settings["prompts"])]
        return softmax(label_log_probs(model, tokenizer, prompts, get_template(settings["template"]),
                                       batch_size=config.llm.eval_batch_size, progress=progress,
                                       max_length=settings["max_length"]))
    raise ConfigError(f"{folder}: unknown model type {info['type']!r}")


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
    probs = predict_probabilities(folder, dialogues, progress=progress, best_so_far=best_so_far)
    offsets = read_model_info(folder).get("calibration")
    return from_probabilities(
        [u.id for u in iter_utterances(dialogues)], probs, np.array([offsets[l] for l in LABELS]) if offsets else None
    )
