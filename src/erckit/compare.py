"""`erckit compare`: several methods on the same split, one table and one chart.

Each method is a recipe (+ overrides) trained into `<out>/<method>/model`, then scored on validation
(and test, when labelled). A method whose result.json exists for the same recipe, the same training
and scored files (by content) and the same stored calibration is reused, not recomputed; a killed comparison
resumes with the next unfinished method.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.cache import sha256
from erckit.config import ConfigError, RunConfig, from_dict, load_config, read_yaml
from erckit.data import Dialogue, gold_labels
from erckit.formats import read_dialogues
from erckit.formats.encoding import read_json
from erckit.labels import LABELS
from erckit.metrics import scores
from erckit.models import MODEL_FILE, load, read_model_info, saved_config, train
from erckit.plots import new_figure, save_figure
from erckit.predictions import write_predictions

OUTPUT_NAMES = ("comparison.md", "comparison.json", "comparison_validation.png", "comparison_test.png")


@dataclass
class Method:
    """A recipe and its overrides, or `model`: a finished erckit model folder trained on the same split."""

    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    model: str | None = None


@dataclass
class CompareConfig:
    """The split every method is trained and scored on, and the methods."""

    out: str = "runs/compare"
    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: str | None = None
    text_column: str | None = None
    methods: dict[str, Method] = field(default_factory=dict)


def _relative_to(folder: Path, data: dict) -> dict:
    """The file's input paths (data files, recipes, model folders) resolved against the file's folder."""

    def resolve(value):
        return str(folder / value) if isinstance(value, str) and not Path(value).is_absolute() else value

    data = {k: resolve(v) if k in ("train", "validation", "test") else v for k, v in data.items()}
    methods = data.get("methods")
    if isinstance(methods, dict):
        data["methods"] = {
            name: {k: resolve(v) if k in ("recipe", "model") else v for k, v in spec.items()}
            if isinstance(spec, dict) else spec
            for name, spec in methods.items()
        }
    return data


def load_compare_config(path: str | Path, overrides: list[str] = ()) -> CompareConfig:
    """A CompareConfig from YAML; `key=value` overrides apply to the top-level keys.

    Input paths written in the file (train, validation, test, a method's recipe or model) are relative to
    the file's folder; paths given as overrides, and `out`, are relative to the current directory."""
    from erckit.config import apply_overrides

    data = apply_overrides(_relative_to(Path(path).parent, read_yaml(path)), list(overrides))
    methods = data.pop("methods", None)
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"{path}: 'methods' must map method names to {{recipe, overrides}}")
    config = from_dict(CompareConfig, data, str(path))
    for name, spec in methods.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: method {name!r} must be a mapping with 'recipe' (and 'overrides') or 'model', "
                              f"not {spec!r}")
    config.methods = {name: from_dict(Method, spec, f"{path}.methods.{name}") for name, spec in methods.items()}
    for name, method in config.methods.items():
        if (method.recipe is None) == (method.model is None):
            raise ConfigError(f"{path}: method {name!r} needs exactly one of 'recipe' and 'model'")
    if config.train is None or config.validation is None:
        raise ConfigError(f"{path}: train and validation are required")
    for name, method in config.methods.items():  # every recipe value is checked before anything is trained
        if method.recipe is not None:
            try:
                method_recipe(method, config, Path(config.out) / name)
            except ConfigError as err:
                raise ConfigError(f"{path}: method {name!r}: {err}") from None
    return config


def method_recipe(method: Method, config: CompareConfig, folder: Path) -> RunConfig:
    """The method's recipe on the comparison's split, trained into `folder/model`."""
    data = [f"data.{k}={getattr(config, k)}" for k in ("train", "validation") if getattr(config, k)]
    data += ["data.test=null", f"data.format={config.format or 'null'}", f"data.text_column={config.text_column or 'null'}"]
    return load_config(method.recipe, [*method.overrides, *data, f"out={folder / 'model'}"])


def _trained_model(name: str, method: Method, config: CompareConfig, folder: Path) -> tuple[Path, RunConfig | None, dict]:
    """(model folder, recipe to train, info of a given model): a given finished model, or the recipe's run
    (loaded and checked here, before anything is trained)."""
    if method.model is not None:
        info = read_model_info(method.model)
        if not info.get("finished"):
            raise ConfigError(f"method {name}: {method.model} is not a finished run")
        return Path(method.model), None, info
    return folder / "model", method_recipe(method, config, folder), {}


def run_method(name: str, method: Method, config: CompareConfig, splits: dict[str, list[Dialogue]],
               trained: tuple[Path, RunConfig | None, dict]) -> dict:
    """Train (or reuse) one method and score it on every split."""
    folder = Path(config.out) / name
    model, run_config, info = trained
    recipe = info["config"] if run_config is None else saved_config(run_config)
    result_path = folder / "result.json"
    scored = {split: sha256(Path(getattr(config, split))) for split in ("train", *splits)}  # trained and scored on
    if not info and (model / MODEL_FILE).exists():
        info = read_model_info(model)  # a run of an earlier comparison: reused, or retrained below
    if result_path.exists():
        previous = read_json(result_path)
        if isinstance(previous, dict) and (previous.get("recipe"), previous.get("scored"), previous.get("calibration")) == (
            recipe, scored, info.get("calibration")
        ):
            print(f"{name}: reusing {result_path}")
            return previous
    started = time.perf_counter()
    if run_config is not None:
        print(f"{name}: training ({method.recipe})")
        info = train(run_config)
    train_seconds = info.get("summary", {}).get("train_seconds", time.perf_counter() - started)
    result = {"recipe": recipe, "scored": scored, "calibration": info.get("calibration"),
              "model": str(model), "train_seconds": round(train_seconds, 1)}
    predictor = load(model, info=info)
    for split, dialogues in splits.items():
        started = time.perf_counter()
        predictions = predictor.predict(dialogues)
        seconds = time.perf_counter() - started
        write_predictions(folder / f"predictions_{split}.jsonl", predictions)
        gold = gold_labels(dialogues, getattr(config, split))
        result[split] = scores([gold[p.id] for p in predictions], [p.label for p in predictions])
        result[f"{split}_predict_seconds"] = round(seconds, 1)
        if result["calibration"]:
            result[f"{split}_calibration"] = _calibration_fit(info, scored[split])
    result["summary"] = {k: v for k, v in info.get("summary", {}).items() if k != "history"}
    write_text_atomic(result_path, json.dumps(result, indent=2) + "\n")
    return result


def _calibration_fit(info: dict, scored_sha256: str) -> dict:
    """Where a calibrated model's offsets were fitted: on the scored file itself (then its score there is
    in-sample, and the cross-fitted figure of `erckit calibrate` is the honest one), elsewhere, or unrecorded."""
    report = info.get("calibration_report") or {}
    fitted = (report.get("fitted_on") or {}).get("sha256")
    if fitted is None:
        return {"fitted_on": "unrecorded"}
    if fitted != scored_sha256:
        return {"fitted_on": "another file"}
    return {"fitted_on": "this split", "cross_fitted_macro_f1": report["macro_f1_after"],
            "cross_fitted_weighted_f1": report["weighted_f1_after"]}


_IN_SAMPLE = ("† calibration offsets fitted on this split: the figure is in-sample; the cross-fitted figure "
              "(`erckit calibrate`, folds by dialogue) is beside it")
_UNRECORDED = "‡ calibrated on a file that was not recorded (an older `erckit calibrate`): the figure may be in-sample"
_MARKS = {"this split": ("†", _IN_SAMPLE), "unrecorded": ("‡", _UNRECORDED)}


def table(results: dict[str, dict], split: str) -> str:
    """A markdown table: macro-F1 first, weighted-F1, per-class F1, train and predict time; calibrated rows
    scored on the split their offsets were fitted on are marked, with the cross-fitted figures beside."""
    header = "| method | macro-F1 | weighted-F1 | " + " | ".join(LABELS) + " | train s | predict s |"
    lines, notes = [header, "|---" * (5 + len(LABELS)) + "|"], []
    for name, r in sorted(results.items(), key=lambda item: -item[1][split]["macro_f1"]):
        s, fit = r[split], r.get(f"{split}_calibration") or {}
        mark, note = _MARKS.get(fit.get("fitted_on"), ("", ""))
        macro, weighted = f"**{s['macro_f1']:.4f}**", f"{s['weighted_f1']:.4f}"
        if "cross_fitted_macro_f1" in fit:
            macro += f" (cross-fitted {fit['cross_fitted_macro_f1']:.4f})"
            weighted += f" (cross-fitted {fit['cross_fitted_weighted_f1']:.4f})"
        if note and note not in notes:
            notes.append(note)
        per = " | ".join(f"{s['per_class'][l]['f1']:.3f}" for l in LABELS)
        lines.append(f"| {name}{mark} | {macro} | {weighted} | {per} | "
                     f"{r['train_seconds']:.0f} | {r[f'{split}_predict_seconds']:.0f} |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def plot(results: dict[str, dict], split: str, path: Path) -> None:
    """Grouped bars: macro-F1, weighted-F1 and each class's F1 per method."""
    import numpy as np

    metrics = ["macro-F1", "weighted-F1", *LABELS]
    names = list(results)
    width = 0.8 / len(names)
    fig, ax = new_figure((10, 4))
    for k, name in enumerate(names):
        s = results[name][split]
        values = [s["macro_f1"], s["weighted_f1"], *(s["per_class"][l]["f1"] for l in LABELS)]
        ax.bar(np.arange(len(metrics)) + k * width, values, width, label=name)
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, metrics)
    ax.set_ylabel(f"{split} F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)  # beside the bars
    save_figure(fig, path)


def compare(config: CompareConfig) -> dict[str, dict]:
    """Run every method; write comparison.md, comparison.json and one PNG per scored split."""
    splits = {}
    for split in ("validation", "test"):
        path = getattr(config, split)
        if path is None:
            continue
        dialogues = read_dialogues(path, config.format, text_column=config.text_column)
        if all(u.label is not None for d in dialogues for u in d.utterances):
            splits[split] = dialogues
    folders = {name: Path(config.out) / name for name in config.methods}
    trained = {name: _trained_model(name, m, config, folders[name]) for name, m in config.methods.items()}  # all checked
    results = {name: run_method(name, method, config, splits, trained[name]) for name, method in config.methods.items()}
    out = Path(config.out)
    parts = []
    for split in splits:
        parts += [f"## {split}", "", table(results, split), f"![{split}](comparison_{split}.png)", ""]
        plot(results, split, out / f"comparison_{split}.png")
    write_text_atomic(out / "comparison.md", "\n".join(parts))
    write_text_atomic(out / "comparison.json", json.dumps(results, indent=2) + "\n")
    return results
