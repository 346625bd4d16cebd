"""Model folders: train one from a recipe, load it back, label dialogues (predictions.jsonl contract).

A model folder holds `erckit_model.json` (type, the recipe sections its kind reads, labels, training
summary) next to its weights. What differs by kind lives in `erckit.kinds`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from erckit import __version__, kinds, runfolder
from erckit.atomic import check_folder, write_text_atomic
from erckit.config import ConfigError, RunConfig, from_dict, to_dict
from erckit.data import DataError, Dialogue, Interrupted, gold_labels
from erckit.formats import read_dialogue_file
from erckit.formats.encoding import read_json
from erckit.labels import LABELS
from erckit.predictions import Prediction
from erckit.predictor import Predictor

__all__ = ["MODEL_FILE", "Predictor", "load", "predict", "train"]

MODEL_FILE = "erckit_model.json"


def read_model_info(folder: str | Path) -> dict:
    """The erckit_model.json of a model folder: an object naming the model type and its recipe."""
    path = Path(folder) / MODEL_FILE
    if not Path(folder).exists():
        raise DataError(folder, None, "no such model folder")
    if not path.exists():
        raise DataError(folder, None, f"not an erckit model folder (no {MODEL_FILE})")
    info = read_json(path, "settings")
    if not isinstance(info, dict) or not isinstance(info.get("type"), str) or not isinstance(info.get("config"), dict):
        raise DataError(path, None, 'expected an object with "type" and "config" (written by erckit train)')
    return info


def source_commit() -> str | None:
    """The git commit of the erckit source that runs (`+dirty` when it has uncommitted changes), None when erckit
    is not run from its own git checkout (an installed wheel): which code trained a model, for its record."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source), *args], check=False, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() / "src" / "erckit" != source:  # erckit's own checkout, not a project around it
        return None
    commit = git("rev-parse", "--short", "HEAD")
    return commit and commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def output_names(kind: str) -> tuple[str, ...]:
    """The files a training of `kind` writes at the top of its run folder, erckit_model.json first."""
    return MODEL_FILE, *kinds.get(kind).outputs()


def _resumable(out: Path, kind: str) -> bool:
    """Whether the unfinished run of `kind` in `out` left a checkpoint to resume (else a new recipe may start over
    in its folder); a kind this erckit does not know: taken as yes, so that its folder is not started over."""
    try:
        return kinds.get(kind).resumable(out)
    except ValueError:
        return True


def saved_config(config: RunConfig) -> dict:
    """The recipe a run folder keeps: the sections (and keys) its kind reads."""
    return kinds.kept(config.model, to_dict(config))


def comparable(recipe: dict, where: str = "a saved recipe") -> dict:
    """A saved recipe as it is compared for reuse: read as a recipe of today's erckit and cut to its kind's
    keys (an older erckit saved every section, and lacked keys added since), without where things are: `out`
    (a moved run stays reusable) and the train and validation paths (those files are compared by content, so
    the same data read from another place reuses the run). `where`: the file it came from, for errors."""
    try:
        recipe = saved_config(from_dict(RunConfig, recipe, where))
    except ConfigError:
        pass  # not a recipe of today's erckit: compared as it is (and found different)
    data = recipe.get("data")
    data = {k: v for k, v in data.items() if k not in ("train", "validation")} if isinstance(data, dict) else data
    return {k: v for k, v in recipe.items() if k != "out"} | {"data": data}


def _check_previous(out: Path, config: RunConfig, digest: dict[str, str]) -> dict | None:
    """The finished identical run in `out` (reused), None to (re)start, or a refusal naming what differs."""
    if not (out / MODEL_FILE).exists():
        return None
    previous = read_model_info(out)
    if not previous.get("finished") and not _resumable(out, previous["type"]):
        return None  # a run stopped before its first checkpoint: nothing to keep
    try:
        saved = kinds.saved_recipe(out, previous)  # a fusion's members where they are now (moved with it)
    except (ValueError, KeyError):  # members nowhere, or a file no erckit wrote: compared as saved (found different)
        saved = previous.get("config") or {}
    if key := kinds.first_difference(comparable(saved, str(out / MODEL_FILE)), comparable(saved_config(config))):
        raise ConfigError(f"{out} holds a run of another recipe ({key} differs); choose another out= or remove it")
    if "data_sha256" not in previous:
        raise ConfigError(f"{out} holds a run that recorded no hash of its data (an older erckit), so it cannot be "
                          "reused safely; choose another out= or remove it")
    if previous.get("data_sha256") != digest:
        changed = [s for s in ("train", "validation") if (previous.get("data_sha256") or {}).get(s) != digest.get(s)]
        raise ConfigError(f"{out} holds a run trained on other data (the content of data.{', data.'.join(changed)} "
                          "differs, compared byte for byte: the same rows saved in another encoding differ too); "
                          "choose another out= or remove it")
    return previous if previous.get("finished") else None


def _read_split(config: RunConfig, split: str) -> tuple[list[Dialogue] | None, str | None]:
    """A labelled split of the recipe and the sha256 of its file (a finished run is reused only for the
    same data); (None, None) when the recipe has none."""
    path = getattr(config.data, split)
    if path is None:
        return None, None
    dialogues, digest = read_dialogue_file(path, config.data.format, text_column=config.data.text_column)
    labels = set(gold_labels(dialogues, path).values())  # refuses unlabelled utterances
    if split == "train" and len(labels) < 2:
        raise DataError(path, None, f"has only one label ({labels.pop()}); training needs two or more")
    return dialogues, digest


def train(config: RunConfig, recipe: str | Path | None = None) -> dict:
    """Train the recipe's model into `config.out`, holding its lock (`erckit.runfolder`); a finished identical
    run is reused, not redone (the returned info then has `reused`: True). An output that would replace an
    input (the data, a fusion's members, the `recipe` file) is refused first. Ctrl-C raises `Interrupted`
    saying what was kept."""
    from erckit.llm.distributed import is_main_process  # a multi-process launch: one process writes
    from erckit.recipes import resolve

    out, main = Path(config.out), is_main_process()
    if config.data.train is None and kinds.reads(config.model, "data.train"):
        raise ConfigError("data.train is required for training")
    members = [f for m in config.fusion.members for f in model_files(m)]
    check_folder(out, [recipe and resolve(recipe), config.data.train, config.data.validation, *members],
                 output_names(config.model))
    with runfolder.hold(out, MODEL_FILE, main=main):
        try:
            return _train(config, out, main)
        except KeyboardInterrupt:
            kept = "its last checkpoint is kept" if _resumable(out, config.model) else "no checkpoint was saved yet"
            raise Interrupted(f"{out}: {kept}; run the same command again to resume") from None


def _train(config: RunConfig, out: Path, main: bool) -> dict:
    """`train` in its held folder; `main`: this process writes."""
    train_dialogues, train_digest = _read_split(config, "train")
    validation, validation_digest = _read_split(config, "validation")
    digest = {split: d for split, d in (("train", train_digest), ("validation", validation_digest)) if d}
    if previous := _check_previous(out, config, digest):
        print(f"{out} already holds this finished run; reusing it")
        return previous | {"reused": True}
    kinds.check_sources(config)  # the starting weights found before the run folder is written
    if main and validation_digest is not None and validation_digest == train_digest:
        print(f"note: data.validation holds the same dialogues as data.train ({config.data.validation}): its "
              "scores, and the epoch or checkpoint chosen by them, measure the training data", file=sys.stderr)
    info = {"type": config.model, "labels": list(LABELS), "erckit_version": __version__,
            "erckit_commit": source_commit(), "config": saved_config(config), "data_sha256": digest}
    if main:
        write_text_atomic(out / MODEL_FILE, json.dumps(info | {"finished": False}, indent=2) + "\n")
    summary = kinds.get(config.model).train(config, train_dialogues, validation, out)
    info |= {"finished": True, "summary": summary}
    if main:  # after train_llm's barrier: best/ is written
        write_text_atomic(out / MODEL_FILE, json.dumps(info, indent=2) + "\n")
    return info


def store_calibration(folder: str | Path, offsets: dict[str, float] | None, report: dict,
                      info: dict | None = None) -> None:
    """Keep calibration offsets in the model folder (`predict` applies them); None removes stored ones.
    `info`: the folder's erckit_model.json when already read."""
    info = (info or read_model_info(folder)) | {"calibration": offsets, "calibration_report": report}
    if offsets is None:
        del info["calibration"]
    write_text_atomic(Path(folder) / MODEL_FILE, json.dumps(info, indent=2) + "\n")


def model_info(path: str | Path) -> dict | None:
    """The erckit_model.json of a model folder, or None for any other path (a model id, a merged folder)."""
    return read_model_info(path) if (Path(path) / MODEL_FILE).exists() else None


def model_files(folder: str | Path | None) -> list[Path]:
    """Every file a model folder holds, at any depth, and the files of a fusion's members: what no output may
    replace (an erckit model folder, a merged model, an adapter; nothing for a hub id)."""
    if folder is None or not Path(folder).is_dir():
        return []
    folder = Path(folder)
    members = kinds.members(folder, model_info(folder))
    return [file for f in (folder, *members) if f.is_dir() for file in f.rglob("*") if file.is_file()]


def _unfinished(folder: Path, info: dict, best_so_far: bool) -> dict | None:
    """What an unfinished run predicts with (kinds that keep their best epoch so far, on request: `load` has
    refused the request for other kinds), or a refusal; None for a finished run."""
    if info.get("finished"):
        return None
    kind = kinds.get(info["type"])
    if not best_so_far:
        hint = " or predict with its best epoch so far (--best-so-far)" if kind.BEST_SO_FAR else ""
        raise ConfigError(f"{folder}: the run has not finished; rerun its train command to resume it{hint}")
    return kind.unfinished_epoch(folder, info)


def check_best_so_far(folder: str | Path, kind: str | None) -> None:
    """Refuse `best_so_far` (--best-so-far) for a kind that keeps no best epoch so far (None: an LLM folder)."""
    if kind is not None and kinds.get(kind).BEST_SO_FAR:
        return
    which = " and ".join(n for n in kinds.NAMES if kinds.get(n).BEST_SO_FAR)
    what = f"a {kind} model" if kind else "an LLM"
    raise ConfigError(f"{folder}: --best-so-far (best_so_far): only {which} runs predict with their best epoch so "
                      f"far, not {what}; remove it")


def load(folder: str | Path, *, best_so_far: bool = False, info: dict | None = None,
         trust_remote_code: bool = False) -> Predictor:
    """Load a trained model folder once. An unfinished run is refused unless `best_so_far` (kinds that keep
    their best epoch so far: bert_bigru; the predictor's `unfinished` then names the epoch). `info`: the
    folder's erckit_model.json when already read. A folder that would run its own code is refused by its kind's
    load unless `trust_remote_code` (the user's word, never the folder's: erckit.remote_code)."""
    folder = Path(folder)
    info = info or read_model_info(folder)
    if best_so_far:
        check_best_so_far(folder, info["type"])
    unfinished = _unfinished(folder, info, best_so_far)
    config = from_dict(RunConfig, kinds.saved_recipe(folder, info), str(folder / MODEL_FILE))  # unused sections: defaults
    predictor = kinds.get(info["type"]).load(folder, config, info, trust_remote_code)
    predictor.unfinished = unfinished
    return predictor


def predict(
    folder: str | Path, dialogues: list[Dialogue], *, progress: bool = True, best_so_far: bool = False,
    trust_remote_code: bool = False,
) -> list[Prediction]:
    """One prediction per utterance, with label probabilities; calibration offsets applied if the model has them."""
    return load(folder, best_so_far=best_so_far, trust_remote_code=trust_remote_code).predict(
        dialogues, progress=progress)
