"""The record of an LLM run: the settings its weights were trained with, saved beside them.

`erckit_llm.json` (as litgpt keeps `hyperparameters.yaml` beside a checkpoint) holds the base model,
chat template, prompt settings (language, window, placement, variant), max length, precision, whether
the folder is a LoRA adapter or a full model, and whether the model runs its own code. Training
writes it into the run folder and into `best/`, `erckit merge` carries it into the merged folder, and
`predict`, `select`, `calibrate` and `compare` (and the vLLM backend) read it with `load_run_record`,
so no setting is repeated on the command line. An explicit flag overrides the record, always through
`with_overrides`, which says what it changed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.data import DataError
from erckit.prompts import PromptConfig

RECORD_FILE = "erckit_llm.json"
RUN_INFO = "erckit_model.json"  # an erckit run folder (erckit train): its weights are in best/
BEST = "best"


@dataclass(frozen=True)
class RunRecord:
    """What prediction needs to score a model exactly as it was trained."""

    base_model: str  # the model the weights were trained on (folder, hub id or packaged:<name>)
    template: str  # chat template name (erckit.llm.chat)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    max_length: int | None = None  # longer contexts lose their oldest tokens, as in training
    precision: str = "auto"  # the training precision (auto | fp32 | fp16 | bf16)
    adapter: bool = True  # the folder holds a LoRA adapter on top of base_model; False: a full model
    trust_remote_code: bool = False  # the recipe asked to run the model's own code (Baichuan2)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str | Path) -> RunRecord:
        """A record from its JSON form; unknown keys and bad values are refused, naming the file."""
        if not isinstance(data, dict):
            raise DataError(where, None, "is not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(where, None, f"unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
        for key in ("base_model", "template"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise DataError(where, None, f"{key!r} must be a non-empty string")
        try:
            prompt = PromptConfig(**data.get("prompt", {}))
        except (TypeError, ValueError) as err:
            raise DataError(where, "prompt", str(err)) from None
        values = {k: v for k, v in data.items() if k in known} | {"prompt": prompt}
        if isinstance(values.get("adapter"), str):  # older `erckit merge` records named the merged adapter
            values["adapter"] = False
        for key, kinds in (("max_length", (int, type(None))), ("precision", (str,)), ("adapter", (bool,)),
                           ("trust_remote_code", (bool,))):
            if key in values and not isinstance(values[key], kinds):
                raise DataError(where, None, f"{key!r} has a value of the wrong type: {values[key]!r}")
        return cls(**values)


def save_run_record(folder: str | Path, record: RunRecord) -> Path:
    """Write `folder/erckit_llm.json` atomically."""
    path = Path(folder) / RECORD_FILE
    write_text_atomic(path, json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def record_folder(path: str | Path) -> Path | None:
    """Where the record of `path` lives: the folder itself, an erckit run's best/, or (for a
    checkpoint-N inside a run) the run folder; None when there is none."""
    path = Path(path)
    candidates = [path / BEST, path] if (path / RUN_INFO).is_file() else [path, path.parent]
    return next((c for c in candidates if (c / RECORD_FILE).is_file()), None)


def load_run_record(path: str | Path | None) -> RunRecord | None:
    """The run record of a model folder, adapter folder, checkpoint or erckit run; None if it has none.

    `packaged:` names and hub ids have none. A record that is not valid JSON is refused, naming the file.
    """
    from erckit.llm.loading import is_packaged

    if path is None or is_packaged(str(path)) or not Path(path).is_dir():
        return None
    folder = record_folder(path)
    if folder is None:
        return None
    file = folder / RECORD_FILE
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(file, None, f"malformed JSON ({err.msg})") from None
    return RunRecord.from_json(data, file)


@dataclass(frozen=True)
class Overrides:
    """Settings given explicitly on the command line; None means 'as recorded'."""

    base_model: str | None = None
    template: str | None = None
    max_length: int | None = None
    language: str | None = None
    window: int | None = None
    placement: str | None = None
    variant: str | None = None
    form: str | None = None
    question: str | None = None


PROMPT_FLAGS = ("language", "window", "placement", "variant", "form", "question")


def with_overrides(record: RunRecord, overrides: Overrides) -> tuple[RunRecord, list[str]]:
    """The record with every explicit flag applied, and one note per value that changed."""
    notes: list[str] = []
    changes: dict = {}
    for name in ("base_model", "template", "max_length"):
        value = getattr(overrides, name)
        if value is not None and value != getattr(record, name):
            changes[name] = value
            notes.append(f"{flag(name)} {value} overrides the run's {getattr(record, name)}")
    prompt_changes = {}
    for name in PROMPT_FLAGS:
        value = getattr(overrides, name)
        if value is not None and value != getattr(record.prompt, name):
            prompt_changes[name] = value
            notes.append(f"{flag(name)} {value} overrides the run's {getattr(record.prompt, name)}")
    if prompt_changes:
        changes["prompt"] = replace(record.prompt, **prompt_changes)
    return replace(record, **changes), notes


def flag(name: str) -> str:
    return "--base" if name == "base_model" else "--" + name.replace("_", "-")


def prompt_from_flags(overrides: Overrides, language: str) -> PromptConfig:
    """Prompt settings from flags, defaults for the rest (for a model without a record, and `prepare`)."""
    chosen = {n: getattr(overrides, n) for n in PROMPT_FLAGS if getattr(overrides, n) is not None}
    return replace(PromptConfig(language=language), **chosen)


@dataclass(frozen=True)
class Resolved:
    """What to load (`model`, and `adapter` on top of it) and the settings to score it with."""

    model: str
    adapter: str | None
    record: RunRecord
    notes: list[str]


def resolve_run(weights: str, overrides: Overrides, language: str) -> Resolved:
    """The model behind `weights` — an erckit run, its best/, a checkpoint, a merged folder, an adapter,
    or any model id — and its settings: the run record with explicit flags applied (each change noted),
    or, with no record, the flags (a template is then required) and defaults. `language` is the
    default prompt language when there is no record."""
    from erckit.llm.loading import check_adapter, is_adapter

    path = Path(weights)
    folder = path / BEST if (path / RUN_INFO).is_file() else path
    adapter = is_adapter(folder)
    if adapter:
        check_adapter(folder)  # a broken adapter_config.json is named before anything else
    record = load_run_record(weights)
    notes: list[str] = []
    if record is None:
        base = overrides.base_model or (None if adapter else weights)
        if base is None:
            raise DataError(folder, None, "is a LoRA adapter with no run record: give --base, the model it was trained on")
        if overrides.template is None:
            raise ValueError(f"name the chat template of {weights} with --template (no {RECORD_FILE} records one)")
        record = RunRecord(base, overrides.template, prompt_from_flags(overrides, language), overrides.max_length,
                           adapter=adapter)
    else:
        record, notes = with_overrides(record, overrides if adapter else replace(overrides, base_model=None))
    if adapter:
        return Resolved(record.base_model, str(folder), record, notes)
    return Resolved(str(folder) if folder.is_dir() else weights, None, record, notes)


def weights_of(record: RunRecord, folder: str | Path) -> tuple[str, str | None]:
    """(model, adapter) to load for the weights in `folder`: the record's base with the folder's
    adapter, or the folder's full model (told apart by `loading.is_adapter`, as everywhere)."""
    from erckit.llm.loading import is_adapter

    return (record.base_model, str(folder)) if is_adapter(folder) else (str(folder), None)
