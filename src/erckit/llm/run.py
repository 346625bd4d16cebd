"""An LLM run resolved once: the weights to load, the settings to score them with, the calibration.

A run is an erckit LLM run folder (its `best/`), a checkpoint of one, a merged folder, a LoRA adapter
or any causal LM (folder, hub id, `packaged:<name>`). `open_run` reads its files once (the run record,
and `erckit_model.json` for an erckit run) and applies the flags given on the command line, noting each
change; `predict`, `calibrate`, `compare`, `select` and training's validation then score it through one
engine (`erckit.llm.engines`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from erckit.config import ConfigError
from erckit.data import DataError
from erckit.flags import apply, flag
from erckit.llm.chat import CHAT_TEMPLATES, ChatTemplate, get_template
from erckit.llm.record import BEST, RECORD_FILE, RunRecord, load_run_record
from erckit.models import MODEL_FILE, model_info
from erckit.prompts import PromptConfig, setting
from erckit.remote_code import first_own_code


@dataclass(frozen=True)
class RunFlags:
    """Settings given explicitly on the command line (None or absent: as the run record says)."""

    base_model: str | None = None  # --base (its help differs by command)
    template: str | None = setting(None, "chat template", tuple(CHAT_TEMPLATES))
    max_length: int | None = setting(None, "truncate longer contexts")
    prompt: dict[str, Any] = field(default_factory=dict)  # PromptConfig fields (erckit.flags.given)

    FLAGS = ("template", "max_length")  # the fields that are flags (`erckit.flags.add_flags`)


@dataclass(frozen=True)
class LLMRun:
    """What to load (`model`, and `adapter` on top of it), the settings to score it with, its calibration."""

    model: str
    adapter: str | None
    record: RunRecord
    template: ChatTemplate  # the record's chat template, resolved (an unknown name is refused on opening)
    calibration: dict[str, float] | None = None  # offsets stored by erckit calibrate (erckit runs only)
    notes: tuple[str, ...] = ()  # what the flags changed in the record
    recorded: bool = False  # the settings come from the run's record (the prompts it was trained on), flags applied

    @cached_property
    def own_code(self) -> tuple[str, str] | None:
        """(folder, why) when loading the run would run code it carries (`erckit.remote_code`): looked for once."""
        return first_own_code([self.adapter, self.model], asked=self.record.trust_remote_code)


def with_overrides(record: RunRecord, flags: RunFlags) -> tuple[RunRecord, list[str]]:
    """The record with every explicit flag applied, and one note per value that changed."""
    notes: list[str] = []
    changes: dict = {}
    for name in ("base_model", "template", "max_length"):
        value = getattr(flags, name)
        if value is not None and value != getattr(record, name):
            changes[name] = value
            notes.append(f"{_flag(name)} {value} overrides the run's {getattr(record, name)}")
    _check_window_given(flags.prompt, flags.prompt.get("form", record.prompt.form))
    prompt_changes = {k: v for k, v in flags.prompt.items() if v != getattr(record.prompt, k)}
    notes += [f"{flag(k)} {v} overrides the run's {getattr(record.prompt, k)}" for k, v in prompt_changes.items()]
    if prompt_changes:
        changes["prompt"] = apply(record.prompt, prompt_changes)
    return replace(record, **changes), notes


def _flag(name: str) -> str:
    return "the base model" if name == "base_model" else flag(name)  # --base (merge, select) or --model (predict)


def prompt_from_flags(flags: RunFlags, language: str) -> PromptConfig:
    """Prompt settings from flags, defaults for the rest (a model without a record, and `prepare`)."""
    _check_window_given(flags.prompt, flags.prompt.get("form", PromptConfig.form))
    return apply(PromptConfig(language=language), flags.prompt)


def _check_window_given(given: dict[str, Any], form: str) -> None:
    """Refuse --window where the prompts read whole dialogues: it would change nothing (a note said it did)."""
    if form == "dialogue" and "window" in given:
        raise ConfigError(f"--window {given['window']}: the window form's setting; the dialogue form reads whole "
                          "dialogues; remove it")


def open_run(weights: str, flags: RunFlags = RunFlags(), language: str = "zh", *, info: dict | None = None) -> LLMRun:
    """The run behind `weights` — an erckit run, its best/, a checkpoint, a merged folder, an adapter, or
    any model id — with its settings: the run record with explicit flags applied (each change noted),
    or, with no record, the flags (a template is then required) and defaults. `language` is the
    prompt language when there is no record; `info`: the erckit_model.json of an erckit run, when already
    read. An unfinished erckit run is refused."""
    from erckit.cache import check_source, is_local_path, is_packaged
    from erckit.llm.loading import check_adapter, is_adapter

    weights = str(Path(weights).expanduser()) if weights.startswith("~") else weights  # a hub id stays as given
    path = Path(weights)
    if is_local_path(weights) and not path.exists():
        raise DataError(weights, None, "no such model folder")
    if path.is_file():
        raise DataError(weights, None, "is a file, not a model folder")
    info = info or model_info(path)
    if info is not None and not info.get("finished"):
        raise ConfigError(f"{path}: the LLM run has not finished (no run record in {BEST}/); rerun its train "
                          "command to resume it")
    folder = path / BEST if info is not None else path
    adapter = is_adapter(folder)
    if adapter:
        check_adapter(folder)  # a broken adapter_config.json is named before anything else (and read once)
    elif flags.base_model is not None:
        raise DataError(weights, None, "is not a LoRA adapter (no adapter_config.json): a base model (--base, or "
                                       "--model under --adapter) does not apply to it; remove it")
    if flags.base_model is not None:  # named before transformers gives its own words for a folder without a model
        from erckit.llm.packaged import PACKAGED_LM_NAME

        check_source(flags.base_model, "the base model", (PACKAGED_LM_NAME, "packaged"))
    record = load_run_record(weights)
    recorded = record is not None
    notes: list[str] = []
    if record is None and not adapter and path.is_dir() and not (path / "config.json").exists():
        raise DataError(weights, None, f"holds no model (no {MODEL_FILE}, {RECORD_FILE}, config.json or "
                                       "adapter_config.json)")
    if record is None:
        base = flags.base_model or (None if adapter else weights)
        if base is None:
            raise DataError(folder, None, "is a LoRA adapter with no run record: give --base, the model it was trained on")
        if flags.template is None and not path.exists() and not is_packaged(weights):
            raise DataError(weights, None, "no such model folder here; as a hub id it needs its chat template: --template")
        if flags.template is None:
            raise ValueError(f"name the chat template of {weights} with --template (no {RECORD_FILE} records one)")
        record = RunRecord(base, flags.template, prompt_from_flags(flags, language), flags.max_length, adapter=adapter)
    else:
        record, notes = with_overrides(record, flags)
    calibration = info.get("calibration") if info is not None else None
    template = get_template(record.template)
    model, adapter_folder = (record.base_model, str(folder)) if adapter else (
        str(folder) if folder.is_dir() else weights, None)
    return LLMRun(model, adapter_folder, record, template, calibration, tuple(notes), recorded)
