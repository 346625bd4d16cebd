"""`erckit compare`: several methods on the same split, one table and one chart.

Each method is a recipe (+ overrides) trained into `<out>/<method>/model`, a finished model folder, or a
fusion of earlier methods (their probabilities averaged, weights chosen on validation only); each is scored on
validation (and test, when labelled), with bootstrap intervals over dialogues and paired differences against
the best method and between the `pairs` the file names. A method whose result.json exists for the same recipe,
the same training and scored files (by content) and the same stored calibration (a given model folder: the
same training run, by its erckit_model.json) is reused, not recomputed; a
killed comparison resumes with the next unfinished method.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from erckit import kinds
from erckit.atomic import atomic_files, check_folder, write_text_atomic
from erckit.cache import sha256
from erckit.config import ConfigError, RunConfig, from_dict, load_config, read_yaml
from erckit.data import DataError, Dialogue, dialogue_groups, gold_labels, iter_utterances
from erckit.ensemble import better_member, fusion_weights, mix, probability_matrix, weights_problem
from erckit.formats import read_dialogues
from erckit.formats.encoding import check_file, read_json
from erckit.intervals import bootstrap, paired_difference
from erckit.labels import LABELS
from erckit.metrics import scores
from erckit.models import MODEL_FILE, comparable, load, output_names, read_model_info, saved_config, train
from erckit.plots import plot_comparison
from erckit.predictions import Prediction, from_probabilities, read_predictions, write_predictions
from erckit.remote_code import check_trusted, recipe_asks

OUTPUT_NAMES = ("comparison.md", "comparison.json", "comparison_validation.png", "comparison_test.png")
RESULT_FILE = "result.json"
SCORED_SPLITS = ("validation", "test")
METHOD_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # a method's folder in `out`: no separator, no leading dot


def predictions_file(split: str) -> str:
    """The name of a method's predictions on `split`, in its folder."""
    return f"predictions_{split}.jsonl"


@dataclass
class Method:
    """A recipe and its overrides, `model`: a finished erckit model folder (trained elsewhere: only scored), or
    `fusion`: other methods whose probabilities are averaged (`weights`, or chosen on validation when null).
    A recipe with `seeds` is trained once per seed (methods `<name>-seed<N>`, with train.seed=N); their mean and
    spread are reported, and a fusion that names `<name>` takes each of its seeds as a member (a weight each).
    `train`: a recipe's own training file instead of the comparison's (a fixed subset of it, for a method too
    slow for all of it); the summary names it, and the method is scored on the comparison's validation and test
    like every other."""

    recipe: str | None = None
    overrides: list[str] = field(default_factory=list)
    train: str | None = None
    model: str | None = None
    fusion: list[str] = field(default_factory=list)
    weights: list[float] | None = None
    seeds: list[int] = field(default_factory=list)


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
    pairs: list[list[str]] = field(default_factory=list)  # [first, second]: first minus second, paired by dialogue
    seed_groups: dict[str, list[str]] = field(default_factory=dict, init=False)  # filled from `seeds`: a seeded
    # recipe -> its methods, one per seed


def _recipe_file(folder: Path, recipe: object) -> bool:
    """Whether `recipe` is a file relative to the compare file: a path (`recipes/mine.yaml`), or a bare name of a
    file there (which then wins over a shipped recipe of that name, as a file in the current folder does for
    `train --config`)."""
    if not isinstance(recipe, str) or Path(recipe).is_absolute():
        return False
    return "/" in recipe or (folder / recipe).is_file()


def _relative_to(folder: Path, data: dict) -> dict:
    """The file's input paths (data files, model folders, recipe files: `_recipe_file`) resolved against the
    file's folder; a bare recipe name with no file there is a shipped recipe, as `erckit train --config` reads it."""

    def resolve(value):
        return str(folder / value) if isinstance(value, str) and not Path(value).is_absolute() else value

    data = {k: resolve(v) if k in ("train", "validation", "test") else v for k, v in data.items()}
    methods = data.get("methods")
    if isinstance(methods, dict):
        data["methods"] = {
            name: {k: resolve(v) if k in ("model", "train") or (k == "recipe" and _recipe_file(folder, v)) else v
                   for k, v in spec.items()}
            if isinstance(spec, dict) else spec
            for name, spec in methods.items()
        }
    return data


def load_compare_config(path: str | Path, overrides: list[str] = (), only: list[str] | None = None) -> CompareConfig:
    """A CompareConfig from YAML; `key=value` overrides apply to the top-level keys; `only`: the methods kept
    (by their names in the file), else all.

    Input paths written in the file (train, validation, test, a recipe file, a model) are relative to
    the file's folder (a recipe without "/" or ".yaml" is a shipped one); paths given as overrides, and `out`,
    are relative to the current directory."""
    from erckit.config import apply_overrides

    data = _relative_to(Path(path).parent, read_yaml(path))
    written = _method_names(data.get("methods"))  # before the overrides, which may drop methods or seeds
    data = apply_overrides(data, list(overrides))
    methods = data.pop("methods", None)
    declared = written | _method_names(methods)  # pairs may name methods or seeds dropped here
    if isinstance(methods, dict):  # methods.<name>=null drops a method
        methods = {name: spec for name, spec in methods.items() if spec is not None}
        for name in methods:
            check_method_name(name, path)
        if only:
            if unknown := [name for name in only if name not in methods]:
                raise ConfigError(f"{path}: no method {unknown[0]!r} (methods: {', '.join(methods)})")
            methods = {name: spec for name, spec in methods.items() if name in only}
    if not isinstance(methods, dict) or not methods:
        raise ConfigError(f"{path}: 'methods' must map method names to {{recipe, overrides}}")
    config = from_dict(CompareConfig, data, str(path))
    for name, spec in methods.items():
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: method {name!r} must be a mapping with 'recipe' (and 'overrides'), 'model' "
                              f"or 'fusion', not {spec!r}")
    config.methods = _expand_seeds({name: from_dict(Method, spec, str(path), f"methods.{name}")
                                    for name, spec in methods.items()}, config, path)
    for name, method in config.methods.items():
        if sum((method.recipe is not None, method.model is not None, bool(method.fusion))) != 1:
            raise ConfigError(f"{path}: method {name!r} needs exactly one of 'recipe', 'model' and 'fusion'")
        members = [m for m, other in config.methods.items() if not other.fusion]
        if unknown := [m for m in method.fusion if m not in members]:
            raise ConfigError(f"{path}: method {name!r}: fusion member {unknown[0]!r} is not a trained method of "
                              f"this comparison ({', '.join(members)})")
        if method.train is not None and method.recipe is None:
            raise ConfigError(f"{path}: method {name!r}: 'train' is a recipe's training file; a model or a fusion "
                              "is not trained here")
        if method.fusion and len(method.fusion) < 2:
            raise ConfigError(f"{path}: method {name!r}: a fusion needs two or more methods")
        if method.weights is not None and (problem := weights_problem(method.weights, len(method.fusion))):
            raise ConfigError(f"{path}: method {name!r}: {problem} ({', '.join(method.fusion)}: a seeded recipe "
                              "is one member per seed)")
    if config.validation is None:
        raise ConfigError(f"{path}: validation is required (every method is scored on it)")
    if config.train is None and (trains := [n for n, m in config.methods.items() if m.recipe and m.train is None]):
        raise ConfigError(f"{path}: train is required: method {trains[0]!r} trains on it (a method given as a "
                          "trained model, model: FOLDER, needs none)")
    config.pairs = _checked_pairs(config, declared, path)
    for name, method in config.methods.items():  # every recipe value is checked before anything is trained
        if method.recipe is not None:
            try:
                method_recipe(method, config, method_folder(config, name))
            except ConfigError as err:
                raise ConfigError(f"{path}: method {name!r}: {err}") from None
    return config


def _method_names(methods: object) -> set[str]:
    """The names a `methods` mapping declares: each method's, and `<name>-seed<N>` for each of its seeds."""
    if not isinstance(methods, dict):
        return set()
    names = set(methods)
    for name, spec in methods.items():
        seeds = spec.get("seeds") if isinstance(spec, dict) else None
        names |= {f"{name}-seed{seed}" for seed in seeds} if isinstance(seeds, list) else set()
    return names


def _checked_pairs(config: CompareConfig, declared: set[str], path: str | Path) -> list[list[str]]:
    """The pairs whose two methods both run (a method left out by --methods or methods.<name>=null, or a seed
    left out by methods.<name>.seeds=[...], drops its pairs). Refused: a pair that is not two different
    methods of the file or its overrides (`declared`; one seed of a seeded recipe is `<name>-seed<N>`) or
    names a seeded recipe as a whole."""
    kept = []
    for pair in config.pairs:
        if not isinstance(pair, list) or len(pair) != 2 or pair[0] == pair[1]:
            raise ConfigError(f"{path}: pairs: {pair!r} is not two different method names [first, second]")
        for name in pair:
            if name in config.seed_groups:
                raise ConfigError(f"{path}: pairs: {name!r} has several seeds: name one ({config.seed_groups[name][0]!r})")
            if name not in declared:
                raise ConfigError(f"{path}: pairs: no method {name!r} (methods: {', '.join(sorted(declared))})")
        if all(name in config.methods for name in pair):
            kept.append(pair)
    return kept


def check_method_name(name: object, path: str | Path) -> None:
    """Refuse a method name that is not a plain folder name inside `out` (it names the method's folder)."""
    if not isinstance(name, str) or not METHOD_NAME.fullmatch(name) or name in OUTPUT_NAMES:
        raise ConfigError(f"{path}: method name {str(name)!r} is not a plain folder name: use letters, digits, "
                          "'_', '-' and '.' (not first), no '/' (it names the method's folder in out)")


def method_folder(config: CompareConfig, name: str) -> Path:
    """`<out>/<name>`: a method's run, predictions and result.json; refused if it leads outside `out` (a link)."""
    out = Path(config.out)
    folder = out / name
    if not folder.resolve().is_relative_to(out.resolve()):
        raise DataError(folder, None, f"leads outside {out} (a link?): the comparison writes only inside its out")
    return folder


def compare_inputs(config: CompareConfig, path: str | Path | None) -> list[Path]:
    """Every file a comparison reads: its own file, the split files, recipe files and the given models' files."""
    from erckit.recipes import resolve

    files = [Path(p) for p in (path, config.train, config.validation, config.test) if p is not None]
    for method in config.methods.values():
        if method.recipe is not None:
            files.append(resolve(method.recipe))
        if method.train is not None:
            files.append(Path(method.train))
        if method.model is not None and Path(method.model).is_dir():
            files += [p for p in Path(method.model).iterdir() if p.is_file()]
    return files


def check_outputs(config: CompareConfig, path: str | Path | None = None) -> None:
    """Refuse, before anything is read or written, any output of the comparison that would replace one of its
    inputs (`compare_inputs`) or land outside `out`."""
    inputs = compare_inputs(config, path)
    check_folder(config.out, inputs, OUTPUT_NAMES)
    given = [Path(m.model) for m in config.methods.values() if m.model is not None]
    for name, method in config.methods.items():
        folder = method_folder(config, name)
        check_folder(folder, inputs, [RESULT_FILE, *map(predictions_file, SCORED_SPLITS)])
        if method.recipe is not None:
            check_folder(folder / "model", inputs, output_names(method_recipe(method, config, folder).model))
            check_folder(folder / "model", given, whole=True)


def _expand_seeds(methods: dict[str, Method], config: CompareConfig, path: str | Path) -> dict[str, Method]:
    """One method per seed of each seeded recipe; fusion members naming a seeded recipe become all its seeds."""
    expanded: dict[str, Method] = {}
    for name, method in methods.items():
        if not method.seeds:
            expanded[name] = method
            continue
        if method.recipe is None or len(set(method.seeds)) != len(method.seeds):
            raise ConfigError(f"{path}: method {name!r}: seeds need a recipe and distinct seeds")
        config.seed_groups[name] = [f"{name}-seed{seed}" for seed in method.seeds]
        for seed, seeded in zip(method.seeds, config.seed_groups[name], strict=True):
            expanded[seeded] = Method(recipe=method.recipe, overrides=[*method.overrides, f"train.seed={seed}"],
                                      train=method.train)
    for method in expanded.values():
        method.fusion = [m for member in method.fusion for m in config.seed_groups.get(member, [member])]
    return expanded


def seed_summary(results: dict[str, dict], groups: dict[str, list[str]], split: str) -> dict[str, dict]:
    """Mean, standard deviation (n - 1; None for one seed) and values of macro-F1 and weighted-F1 over each seeded
    recipe's seeds."""
    import statistics

    summary = {}
    for name, members in groups.items():
        row = {"seeds": len(members)}
        for metric in ("macro_f1", "weighted_f1"):
            values = [results[m][split][metric] for m in members]
            row[metric] = {"mean": statistics.fmean(values), "values": values,
                           "sd": statistics.stdev(values) if len(values) > 1 else None}
        summary[name] = row
    return summary


def seed_table(summary: dict[str, dict]) -> str:
    """Seeded recipes: mean ± standard deviation over seeds."""
    if not summary:
        return ""
    lines = ["Seeds (the same recipe, one run per seed):", "",
             "| recipe | seeds | macro-F1 mean ± sd | weighted-F1 mean ± sd | macro-F1 of each seed |", "|---|---|---|---|---|"]
    for name, row in summary.items():
        macro, weighted = (_mean_sd(row[metric]) for metric in ("macro_f1", "weighted_f1"))
        values = ", ".join(f"{v:.4f}" for v in row["macro_f1"]["values"])
        lines.append(f"| {name} | {row['seeds']} | {macro} | {weighted} | {values} |")
    return "\n".join(lines) + "\n"


def _mean_sd(summary: dict) -> str:
    """"0.4422 ± 0.0035", or "0.4422 (one seed: no spread)"."""
    if summary["sd"] is None:
        return f"{summary['mean']:.4f} (one seed: no spread)"
    return f"{summary['mean']:.4f} ± {summary['sd']:.4f}"


def training_file(method: Method, config: CompareConfig) -> str:
    """The file a recipe method trains on: its own `train`, else the comparison's."""
    return method.train or config.train


def method_recipe(method: Method, config: CompareConfig, folder: Path) -> RunConfig:
    """The method's recipe on the comparison's split (or its own training file), trained into `folder/model`."""
    data = [f"data.train={training_file(method, config)}", f"data.validation={config.validation}"]
    data += [f"data.format={config.format or 'null'}", f"data.text_column={config.text_column or 'null'}"]
    return load_config(method.recipe, [*method.overrides, *data, f"out={folder / 'model'}"])


def _trained_model(name: str, method: Method, config: CompareConfig, folder: Path,
                   trust_remote_code: bool = False) -> tuple[Path, RunConfig | None, dict]:
    """(model folder, recipe to train, info of a given model): a given finished model (its own code refused
    unless `trust_remote_code`), or the recipe's run (loaded and checked here, before anything is trained)."""
    if method.model is not None:
        check_trusted([method.model], trust_remote_code)
        info = read_model_info(method.model)
        if not info.get("finished"):
            raise ConfigError(f"method {name}: {method.model} is not a finished run")
        return Path(method.model), None, info
    recipe = method_recipe(method, config, folder)
    if not (folder / "model" / MODEL_FILE).exists() or not read_model_info(folder / "model").get("finished"):
        kinds.check_sources(recipe)  # to be trained: its starting weights found before any method trains
    return folder / "model", recipe, {}


def run_method(name: str, method: Method, config: CompareConfig, splits: dict[str, list[Dialogue]],
               trained: tuple[Path, RunConfig | None, dict], trust_remote_code: bool = False) -> dict:
    """Train (or reuse) one method and score it on every split. A given model's own code runs only with
    `trust_remote_code`; a recipe's, when the recipe (the user's) asks for it."""
    folder = method_folder(config, name)
    model, run_config, info = trained
    recipe = info["config"] if run_config is None else saved_config(run_config)
    result_path = folder / RESULT_FILE
    trained_on = ({"train": training_file(method, config)} if run_config is not None else {}) | {
        split: getattr(config, split) for split in splits}  # a given model: only the files it is scored on
    scored = {split: sha256(Path(path)) for split, path in trained_on.items()}  # trained and scored on
    if run_config is None:  # a given model: scored again when its folder was trained again (or replaced)
        scored["model"] = hashlib.sha256(json.dumps({k: v for k, v in info.items() if not k.startswith("calibration")},
                                                    sort_keys=True).encode()).hexdigest()
    if not info and (model / MODEL_FILE).exists():
        info = read_model_info(model)  # a run of an earlier comparison: reused, or retrained below
    if result_path.exists():  # the same recipe, wherever its folder and files are, on the same data
        previous = read_json(result_path, "settings")
        if isinstance(previous, dict) and isinstance(previous.get("recipe"), dict) and (
            comparable(previous["recipe"]), previous.get("scored"), previous.get("calibration")
        ) == (comparable(recipe), scored, info.get("calibration")):
            print(f"{name}: reusing {result_path}")
            return previous | {"model": str(model), "commit": info.get("erckit_commit") or previous.get("commit")}
    started = time.perf_counter()
    if run_config is not None:
        print(f"{name}: training ({method.recipe})")
        info = train(run_config)
    train_seconds = info.get("summary", {}).get("train_seconds", time.perf_counter() - started)
    result = {"recipe": recipe, "scored": scored, "calibration": info.get("calibration"),
              "model": str(model), "train_seconds": round(train_seconds, 1)}
    trusted = trust_remote_code or (run_config is not None and recipe_asks(recipe))  # the user's word either way
    predictor = load(model, info=info, trust_remote_code=trusted)
    for split, dialogues in splits.items():
        started = time.perf_counter()
        predictions = predictor.predict(dialogues, progress=True)  # a bar on a terminal, as predict's
        seconds = time.perf_counter() - started
        write_predictions(folder / predictions_file(split), predictions)
        result[split] = _scored(predictions, dialogues, getattr(config, split))
        result[f"{split}_predict_seconds"] = round(seconds, 1)
        if result["calibration"]:
            result[f"{split}_calibration"] = _calibration_fit(info, scored[split])
    result["summary"] = {k: v for k, v in info.get("summary", {}).items() if k != "history"}
    result["commit"] = info.get("erckit_commit")  # the erckit source that trained it, when recorded
    write_text_atomic(result_path, json.dumps(result, indent=2) + "\n")
    return result


def _scored(predictions: list[Prediction], dialogues: list[Dialogue], path: str) -> dict:
    """Scores of `predictions` (file order) with bootstrap intervals over the dialogues."""
    gold = gold_labels(dialogues, path)
    labels = [gold[p.id] for p in predictions], [p.label for p in predictions]
    return scores(*labels) | {"intervals": bootstrap(*labels, dialogue_groups(dialogues))}


def _split_probabilities(config: CompareConfig, name: str, split: str, ids: list[str]) -> np.ndarray:
    path = method_folder(config, name) / predictions_file(split)
    return probability_matrix(read_predictions(path), ids, path)


def run_fusion(name: str, method: Method, config: CompareConfig, splits: dict[str, list[Dialogue]],
               results: dict[str, dict]) -> dict:
    """Average the members' probabilities on every split; weights given, or chosen on validation macro-F1."""
    ids = {split: [u.id for u in iter_utterances(dialogues)] for split, dialogues in splits.items()}
    probs = {split: [_split_probabilities(config, m, split, ids[split]) for m in method.fusion] for split in splits}

    def on_validation() -> tuple[list[np.ndarray], list[str]]:
        gold = gold_labels(splits["validation"], config.validation)
        return probs["validation"], [gold[i] for i in ids["validation"]]

    chosen = fusion_weights(method.weights, len(method.fusion), on_validation)
    shares = chosen.shares
    members = [results[m] for m in method.fusion]
    commits = sorted({r["commit"] for r in members if r.get("commit")})
    result = {"fusion": method.fusion, "weights": shares, "weights_from": chosen.origin,
              "train_seconds": round(sum(r["train_seconds"] for r in members), 1),
              "commit": ", ".join(commits) if commits else None}
    for split, dialogues in splits.items():
        predictions = from_probabilities(ids[split], mix(shares, probs[split]))
        write_predictions(method_folder(config, name) / predictions_file(split), predictions)
        result[split] = _scored(predictions, dialogues, getattr(config, split))
        result[f"{split}_predict_seconds"] = round(sum(r[f"{split}_predict_seconds"] for r in members), 1)
    print(f"{name}: fusion of {', '.join(method.fusion)} with weights "
          + ", ".join(f"{w:.2f}" for w in shares) + f" ({chosen.origin})")
    if (best := better_member(chosen.member_macro_f1, chosen.validation_macro_f1)) is not None:
        print(f"note: {method.fusion[best]} alone scores {chosen.member_macro_f1[best]:.4f} on validation, above "
              f"{name}: the fusion does not help there")
    return result


def paired(config: CompareConfig, results: dict[str, dict], split: str, dialogues: list[Dialogue]) -> dict[str, dict]:
    """Each method against the best one on `split`: the paired bootstrap of their macro-F1 difference."""
    best = max(results, key=lambda name: ranking_figure(results[name], split))
    differences = pair_differences(config, split, dialogues, [(best, name) for name in results if name != best])
    return {name: {"against": best} | difference for (_, name), difference in differences.items()}


def pair_differences(config: CompareConfig, split: str, dialogues: list[Dialogue],
                     pairs: list[tuple[str, str]] | list[list[str]]) -> dict[tuple[str, str], dict]:
    """The paired bootstrap over dialogues of each pair's macro-F1 on `split`, first minus second."""
    ids = [u.id for u in iter_utterances(dialogues)]
    gold = gold_labels(dialogues, getattr(config, split))
    names = {name for pair in pairs for name in pair}
    labels = {name: read_predictions(method_folder(config, name) / predictions_file(split)) for name in names}
    groups = dialogue_groups(dialogues)
    return {(first, second): paired_difference([gold[i] for i in ids], [labels[first][i].label for i in ids],
                                               [labels[second][i].label for i in ids], groups)
            for first, second in pairs}


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
_FUSION_IN_SAMPLE = ("§ fusion weights chosen on this split: the figure is in-sample (optimistic); judge the "
                     "fusion on another split")


def ranking_figure(result: dict, split: str) -> float:
    """A method's macro-F1 on `split` as methods are ranked: the cross-fitted figure where its calibration was
    fitted on that split (the in-sample one flatters it), else the figure itself."""
    return (result.get(f"{split}_calibration") or {}).get("cross_fitted_macro_f1", result[split]["macro_f1"])


def table(results: dict[str, dict], split: str) -> str:
    """A markdown table: macro-F1 first, weighted-F1, per-class F1, train and predict time; calibrated rows
    scored on the split their offsets were fitted on are marked, with the cross-fitted figures beside."""
    header = "| method | macro-F1 | 95% interval | weighted-F1 | " + " | ".join(LABELS) + " | train s | predict s |"
    lines, notes = [header, "|---" * (6 + len(LABELS)) + "|"], []
    for name, r in sorted(results.items(), key=lambda item: -ranking_figure(item[1], split)):
        s, fit = r[split], r.get(f"{split}_calibration") or {}
        mark, note = _MARKS.get(fit.get("fitted_on"), ("", ""))
        if split == "validation" and r.get("weights_from") == "validation macro-F1":
            mark, note = "§", _FUSION_IN_SAMPLE
        macro, weighted = f"**{s['macro_f1']:.4f}**", f"{s['weighted_f1']:.4f}"
        if "cross_fitted_macro_f1" in fit:
            macro += f" (cross-fitted {fit['cross_fitted_macro_f1']:.4f})"
            weighted += f" (cross-fitted {fit['cross_fitted_weighted_f1']:.4f})"
        if note and note not in notes:
            notes.append(note)
        per = " | ".join(f"{s['per_class'][l]['f1']:.3f}" for l in LABELS)
        interval = "{:.3f}–{:.3f}".format(*s["intervals"]["macro_f1"]) if "intervals" in s else ""
        lines.append(f"| {name}{mark} | {macro} | {interval} | {weighted} | {per} | "
                     f"{r['train_seconds']:.0f} | {r[f'{split}_predict_seconds']:.0f} |")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def describe_method(name: str, method: Method, result: dict) -> str:
    """What a method is, for the summary: its recipe and overrides, the model folder given, or its fusion."""
    if method.fusion:
        shares = " : ".join(f"{w:.2f}" for w in result["weights"])
        chosen = "chosen on validation" if result.get("weights_from") == "validation macro-F1" else "given"
        return f"fusion of {', '.join(method.fusion)}, {shares} ({chosen})"
    if method.model is not None:
        return f"model {method.model}"
    trained_on = [f"trained on {Path(method.train).name}"] if method.train else []
    return " ".join([f"`{method.recipe}`", *(f"`{o}`" for o in method.overrides), *trained_on])


def summary_table(results: dict[str, dict], config: CompareConfig) -> str:
    """One row per method, best validation macro-F1 first (cross-fitted where calibrated on validation;
    validation chooses, test reports): validation and
    test macro-F1 with their 95% intervals over dialogues, test weighted-F1, training time, and the erckit
    commit that trained it (— when its run did not record one)."""
    splits = [s for s in SCORED_SPLITS if all(s in r for r in results.values())]
    if splits != list(SCORED_SPLITS):
        return ""
    header = ("| method | recipe | validation macro-F1 (95% interval) | test macro-F1 (95% interval) "
              "| test weighted-F1 | training | commit |")
    lines, notes = [header, "|---|---|---|---|---|---|---|"], {}
    for name, r in sorted(results.items(), key=lambda item: -ranking_figure(item[1], "validation")):
        cells = []
        for split in SCORED_SPLITS:
            low, high = r[split]["intervals"]["macro_f1"]
            fit = r.get(f"{split}_calibration") or {}
            mark, note = _MARKS.get(fit.get("fitted_on"), ("", ""))
            if split == "validation" and r.get("weights_from") == "validation macro-F1":
                mark, note = "§", _FUSION_IN_SAMPLE
            if mark:
                notes[mark] = note
            crossed = f", cross-fitted {fit['cross_fitted_macro_f1']:.4f}" if "cross_fitted_macro_f1" in fit else ""
            cells.append(f"{r[split]['macro_f1']:.4f}{mark} ({low:.3f}–{high:.3f}{crossed})")
        lines.append(f"| {name} | {describe_method(name, config.methods[name], r)} | {cells[0]} | {cells[1]} | "
                     f"{r['test']['weighted_f1']:.4f} | {r['train_seconds'] / 60:.0f} min | {r.get('commit') or '—'} |")
    return "\n".join(["## Summary", "", *lines, "", *notes.values(), ""])


def pairs_table(differences: dict[str, dict[tuple[str, str], dict]]) -> str:
    """The file's pairs, first minus second, on each scored split: the difference and its 95% interval."""
    if not differences or not next(iter(differences.values())):
        return ""
    splits = list(differences)
    lines = ["Pairs named in the comparison's file, paired bootstrap over dialogues (macro-F1, first minus second):",
             "", "| pair | " + " | ".join(f"{s} difference (95% interval)" for s in splits) + " |",
             "|---|" + "---|" * len(splits)]
    for first, second in differences[splits[0]]:
        cells = [differences[s][first, second] for s in splits]
        lines.append(f"| {first} − {second} | " + " | ".join(
            f"{d['difference']:+.4f} ({d['interval'][0]:+.3f} to {d['interval'][1]:+.3f})" for d in cells) + " |")
    return "\n".join(lines) + "\n"


def paired_table(differences: dict[str, dict]) -> str:
    """The paired bootstrap of each method against the best: is the gap more than the data's noise?"""
    if not differences:
        return ""
    best = next(iter(differences.values()))["against"]
    lines = [f"Paired bootstrap over dialogues, {best} minus each method (macro-F1):", "",
             "| method | difference | 95% interval | resamples where the best is higher |", "|---|---|---|---|"]
    for name, d in sorted(differences.items(), key=lambda item: item[1]["difference"]):
        lines.append(f"| {name} | {d['difference']:+.4f} | {d['interval'][0]:+.3f} to {d['interval'][1]:+.3f} "
                     f"| {d['share_first_higher']:.1%} |")
    return "\n".join(lines) + "\n"


def compare(config: CompareConfig, config_file: str | Path | None = None, *,
            trust_remote_code: bool = False) -> dict[str, dict]:
    """Run every method; write comparison.md, comparison.json and one PNG per scored split. `config_file`:
    the comparison's file, an input too (`check_outputs` runs first). `trust_remote_code`: the given `model:`
    folders' own code may run (--trust-remote-code)."""
    check_outputs(config, config_file)
    for file in {training_file(m, config) for m in config.methods.values() if m.recipe is not None}:
        check_file(file, "input")  # every training file there before the first method trains
    splits = {}
    for split in SCORED_SPLITS:
        path = getattr(config, split)
        if path is None:
            continue
        dialogues = read_dialogues(path, config.format, text_column=config.text_column)
        if split == "validation" or any(u.label is not None for d in dialogues for u in d.utterances):
            gold_labels(dialogues, path)  # methods are compared on validation; a test file is labelled or not at all
            splits[split] = dialogues
        else:
            print(f"{split}: {path} has no labels: it is not scored (the comparison is on validation)")
    trained = {name: _trained_model(name, m, config, method_folder(config, name), trust_remote_code)  # all checked first
               for name, m in config.methods.items() if not m.fusion}
    results = {name: run_method(name, config.methods[name], config, splits, trained[name], trust_remote_code)
               for name in trained}
    for name, method in config.methods.items():  # fusions after the methods they average
        if method.fusion:
            results[name] = run_fusion(name, method, config, splits, results)
    pairs = {split: pair_differences(config, split, dialogues, config.pairs) for split, dialogues in splits.items()}
    parts, charts = [summary_table(results, config), pairs_table(pairs)], {}
    for split, dialogues in splits.items():
        for (first, second), difference in pairs[split].items():
            results[first].setdefault(f"{split}_pairs", {})[second] = difference
        differences = paired(config, results, split, dialogues) if len(results) > 1 else {}
        for name, difference in differences.items():
            results[name][f"{split}_paired"] = difference
        seeds = seed_summary(results, config.seed_groups, split)
        for name, row in seeds.items():
            for member in config.seed_groups[name]:
                results[member][f"{split}_seeds"] = {"recipe": name} | row
        parts += [f"## {split} ({getattr(config, split)})", "", table(results, split), paired_table(differences),
                  seed_table(seeds), f"![{split}](comparison_{split}.png)", ""]
        charts[f"comparison_{split}.png"] = split
    with atomic_files(config.out, OUTPUT_NAMES) as stage:  # the tables and charts of one run, all or none
        for name, split in charts.items():
            plot_comparison(results, split, stage / name)
        write_text_atomic(stage / "comparison.md", "\n".join(parts))
        write_text_atomic(stage / "comparison.json", json.dumps(results, indent=2) + "\n")
    return results
