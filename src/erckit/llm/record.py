"""The record of an LLM run: the settings its weights were trained with, saved beside them.

`erckit_llm.json` (as litgpt keeps `hyperparameters.yaml` beside a checkpoint) holds the base model,
chat template, prompt settings (`erckit.prompts.PromptConfig`), max length, the scoring batch settings
(packed row tokens, batch size), precision, whether the folder is a LoRA adapter or a full model, and
whether the model runs its own code. Training writes it into the run folder and into `best/`,
`erckit merge` carries it into the merged folder, and every command that scores a run reads it once,
through `erckit.llm.run.open_run`, so no setting is repeated on the command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.config import ConfigError, LLMConfig, from_dict
from erckit.data import DataError
from erckit.formats.encoding import read_json
from erckit.models import MODEL_FILE
from erckit.prompts import PromptConfig

RECORD_FILE = "erckit_llm.json"
BEST = "best"  # an erckit LLM run folder keeps its best weights (and their record) here


@dataclass(frozen=True)
class RunRecord:
    """What prediction needs to score a model exactly as it was trained."""

    base_model: str  # the model the weights were trained on (folder, hub id or packaged:<name>)
    template: str  # chat template name (erckit.llm.chat)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    max_length: int | None = None  # longer contexts lose their oldest tokens, as in training
    precision: str = "auto"  # the training precision (auto | fp32 | fp16 | bf16)
    adapter: bool = True  # the folder holds a LoRA adapter on top of base_model; False: a full model
    trust_remote_code: bool = False  # the recipe asked to run the model's own code (Baichuan2): loading it then
    # needs the user's --trust-remote-code too (erckit.remote_code: a received record is not the user's word)
    pack_tokens: int = LLMConfig.pack_tokens  # dialogue form, transformers scoring: tokens per packed row
    eval_batch_size: int = LLMConfig.eval_batch_size  # label scoring: prompts (dialogue form: dialogues) a batch

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict, where: str | Path) -> RunRecord:
        """A record from its JSON form; unknown keys and bad values are refused, naming the file."""
        if not isinstance(data, dict):
            raise DataError(where, None, "is not a JSON object")
        if isinstance(data.get("adapter"), str):  # older `erckit merge` records named the merged adapter
            data = data | {"adapter": False}
        try:
            record = from_dict(cls, data, "")
        except ConfigError as err:
            raise DataError(where, None, str(err)) from None
        for key in ("base_model", "template"):
            if not getattr(record, key).strip():
                raise DataError(where, None, f"{key} must not be empty")
        try:  # the values the recipe's keys of the same name would take
            LLMConfig(**{k: getattr(record, k) for k in ("max_length", "precision", "pack_tokens", "eval_batch_size")
                         if getattr(record, k) is not None})
        except ValueError as err:
            raise DataError(where, None, str(err)) from None
        return record


def save_run_record(folder: str | Path, record: RunRecord) -> Path:
    """Write `folder/erckit_llm.json` atomically."""
    path = Path(folder) / RECORD_FILE
    write_text_atomic(path, json.dumps(record.to_json(), indent=2, ensure_ascii=False) + "\n")
    return path


def record_folder(path: str | Path) -> Path | None:
    """Where the record of `path` lives: the folder itself, an erckit run's best/, or (for a
    checkpoint-N inside a run) the run folder; None when there is none."""
    path = Path(path)
    candidates = [path / BEST, path] if (path / MODEL_FILE).exists() else [path, path.parent]
    return next((c for c in candidates if (c / RECORD_FILE).exists()), None)


def load_run_record(path: str | Path | None) -> RunRecord | None:
    """The run record of a model folder, adapter folder, checkpoint or erckit run; None if it has none.

    `packaged:` names and hub ids (not folders) have none. A record that is not valid JSON is refused, naming
    the file.
    """
    if path is None or not Path(path).is_dir():
        return None
    folder = record_folder(path)
    if folder is None:
        return None
    file = folder / RECORD_FILE
    return RunRecord.from_json(read_json(file, "settings"), file)
