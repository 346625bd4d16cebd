"""Run configuration: typed dataclasses read from YAML, with `key=value` overrides from the command line.

    erckit train --config configs/bert_bigru.yaml train.epochs=2 encoder.max_length=48
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MODEL_TYPES = ("bert_bigru", "tfidf", "llm")


class ConfigError(ValueError):
    """A bad recipe or override; the message names the file and the key."""


@dataclass
class DataConfig:
    """The dialogue files; test is optional (labelled or not)."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None
    format: str | None = None
    text_column: str | None = None


@dataclass
class EncoderConfig:
    """The utterance encoder of the bert_bigru model."""

    name: str = "packaged:multilingual-e5-small"
    max_length: int = 64
    speaker: str = "name"  # how the speaker is written before the text: name | letter | none
    freeze_embeddings: bool = True
    freeze_layers: int = 0  # the lowest N transformer layers (and the embeddings with them) are frozen
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        if self.speaker not in ("name", "letter", "none"):
            raise ConfigError(f"encoder.speaker must be name, letter or none, not {self.speaker!r}")


@dataclass
class ClassifierConfig:
    """The context model over utterance vectors."""

    gru_hidden: int = 256
    dropout: float = 0.1


@dataclass
class TrainConfig:
    """The optimisation recipe shared by the classifier models."""

    epochs: int = 4
    lr: float = 3e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    batch_dialogues: int = 4
    class_weight_power: float = 0.5  # loss weight ∝ (1 / class frequency) ** power; 0 = unweighted
    seed: int = 0
    # bert_bigru: stop after `patience` epochs without a higher validation macro-F1 (0 = run all `epochs`,
    # which are then the cap); the learning-rate schedule always spans `epochs`
    patience: int = 0

    def __post_init__(self) -> None:
        if self.patience < 0:
            raise ConfigError(f"train.patience must be 0 (off) or a number of epochs, not {self.patience}")


@dataclass
class TfidfConfig:
    """Character n-gram TF-IDF + logistic regression (the simplest honest baseline)."""

    ngram_min: int = 1
    ngram_max: int = 3
    max_features: int = 200000
    c: float = 1.0
    balanced: bool = True


@dataclass
class PromptSettings:
    """How the LLM path turns dialogues into prompts (see erckit.prompts)."""

    language: str = "auto"  # zh | en | auto (detected from the training text)
    window: int = 10
    placement: str = "centered"
    variant: str = "emotion"  # emotion | speaker
    same_speaker: int = 0  # auxiliary same-speaker questions per training dialogue


@dataclass
class LoraSettings:
    """LoRA adapters (peft)."""

    rank: int = 64
    alpha: int = 128
    dropout: float = 0.0
    target_modules: str = "all-linear"  # peft's "all-linear" excludes the output head (Baichuan2's NormHead too)


@dataclass
class LLMConfig:
    """Fine-tuning a chat LLM on the emotion prompts, with checkpoints chosen by validation macro-F1."""

    model: str = "packaged:gemma-3-270m"
    template: str = "plain"  # baichuan2 | chatml | gemma | plain (erckit.llm.chat)
    trust_remote_code: bool = False
    finetuning: str = "lora"  # lora | qlora (needs bitsandbytes + a GPU) | full
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    max_length: int = 1024
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs
    lr: float = 1e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    batch_size: int = 2  # per device
    grad_accum: int = 1
    eval_steps: int = 100  # validation macro-F1 and a checkpoint every N optimiser steps
    eval_subset: int = 0  # score only the first N validation utterances (0 = all)
    eval_batch_size: int = 8
    save_total_limit: int = 3  # checkpoints kept besides the best
    precision: str = "auto"  # auto (bf16/fp16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a DeepSpeed JSON config, e.g. configs/deepspeed/zero2.json
    logging_steps: int = 10


@dataclass
class RunConfig:
    """One training run: what model, on what data, written where."""

    model: str = "bert_bigru"
    out: str = "runs/model"
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tfidf: TfidfConfig = field(default_factory=TfidfConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)

    def __post_init__(self) -> None:
        if self.model not in MODEL_TYPES:
            raise ConfigError(f"model must be one of {', '.join(MODEL_TYPES)}, not {self.model!r}")


def _convert(value: Any, kind: Any, where: str) -> Any:
    """Check or convert a YAML value to the annotated field type."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(o for o in options if o is not type(None))
        origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return from_dict(kind, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list")
        (item,) = typing.get_args(kind)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping")
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if kind in (int, bool, str) and type(value) is kind:
        return value
    raise ConfigError(f"{where}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass `cls` from a mapping; unknown keys and wrong types are refused."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    try:
        return cls(**{k: _convert(v, hints[k], f"{where}.{k}") for k, v in data.items()})
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{where}: {err}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys from `key=value` strings; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw else None
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a mapping."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: malformed YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """A RunConfig from a YAML recipe (or defaults) with overrides applied."""
    data = read_yaml(path) if path else {}
    data = apply_overrides(data, list(overrides))
    try:
        return from_dict(RunConfig, data, str(path or "config"))
    except ConfigError as err:
        raise ConfigError(str(err)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain mapping (for saving next to the model)."""
    return dataclasses.asdict(config)
