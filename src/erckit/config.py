"""Run configuration: typed dataclasses read from YAML, with `key=value` overrides from the command line.

    erckit train --config bert_bigru train.epochs=2 encoder.max_length=48
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from erckit import kinds
from erckit.cache import PACKAGED_ENCODER_NAME, PACKAGED_LM_NAME
from erckit.formats.encoding import read_text
from erckit.prompts import TEMPLATES, PromptConfig, setting

MODEL_TYPES = kinds.NAMES
FINETUNING = ("lora", "qlora", "full")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


class ConfigError(ValueError):
    """A bad recipe or override; the message names the file and the key."""


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Refuse a recipe value: `key must be <allowed>, not <value>`."""
    if not ok:
        raise ConfigError(f"{key} must be {allowed}, not {value!r}")


def positive(value: Any) -> bool:
    """A finite number > 0."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def non_negative(value: Any) -> bool:
    """A finite number >= 0."""
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def fraction(value: Any) -> bool:
    """A number in [0, 1)."""
    return isinstance(value, int | float) and 0 <= value < 1


@dataclass
class DataConfig:
    """The dialogue files a training reads (a test file is labelled by `erckit predict`)."""

    train: str | None = None
    validation: str | None = None
    test: str | None = None  # read by no kind, refused in a recipe: declared so model folders saved with it load
    format: str | None = None
    text_column: str | None = None

    def __post_init__(self) -> None:
        from erckit.formats import FORMATS

        require(self.format in (None, *FORMATS), "data.format", self.format, f"null or one of {', '.join(FORMATS)}")
        for key in ("train", "validation", "test", "text_column"):
            value = getattr(self, key)
            require(value is None or bool(value), f"data.{key}", value, "null or a non-empty string")


@dataclass
class EncoderConfig:
    """The utterance encoder of the bert_bigru model."""

    name: str = PACKAGED_ENCODER_NAME
    # utterance: each utterance encoded alone | dialogue: a dialogue's turns encoded together (erckit.encoder.model)
    context: str = "utterance"
    max_length: int = 64  # tokens per utterance (utterance context: with "query:" and the special tokens)
    dialogue_tokens: int = 512  # dialogue context: longer dialogues are cut into overlapping chunks of N tokens
    speaker: str = "name"  # how the speaker is written before the text: name | letter | none
    freeze_embeddings: bool = True
    freeze_layers: int = 0  # the lowest N transformer layers (and the embeddings with them) are frozen
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        require(self.speaker in ("name", "letter", "none"), "encoder.speaker", self.speaker, "name, letter or none")
        require(bool(self.name), "encoder.name", self.name, "a model folder, hub id or packaged:<name>")
        require(self.context in ("utterance", "dialogue"), "encoder.context", self.context, "utterance or dialogue")
        require(self.max_length >= 2, "encoder.max_length", self.max_length, "at least 2 tokens")
        require(self.dialogue_tokens >= 1, "encoder.dialogue_tokens", self.dialogue_tokens, "1 or more")
        require(self.context != "dialogue" or self.dialogue_tokens >= 4 * (self.max_length + 1) + 8,
                "encoder.dialogue_tokens", self.dialogue_tokens,
                f"at least 4 × (encoder.max_length + 1) + 8 = {4 * (self.max_length + 1) + 8} (a turn and context)")
        require(self.freeze_layers >= 0, "encoder.freeze_layers", self.freeze_layers, "0 or more")


@dataclass
class ClassifierConfig:
    """The context model over utterance vectors."""

    gru_hidden: int = 256
    dropout: float = 0.1

    def __post_init__(self) -> None:
        require(self.gru_hidden >= 1, "classifier.gru_hidden", self.gru_hidden, "1 or more")
        require(fraction(self.dropout), "classifier.dropout", self.dropout, "in [0, 1)")


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
    # bert_bigru: validate and keep an exponential moving average of the trained weights, updated after every
    # step with this decay (0 = off: the raw weights)
    ema: float = 0.0
    label_smoothing: float = 0.0  # bert_bigru: the share of each target spread evenly over the labels (0 = off)

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs", self.epochs, "1 or more")
        require(self.patience >= 0, "train.patience", self.patience, "0 (off) or a number of epochs")
        require(fraction(self.ema), "train.ema", self.ema, "0 (off) or a decay in (0, 1)")
        require(fraction(self.label_smoothing), "train.label_smoothing", self.label_smoothing, "in [0, 1)")
        require(positive(self.lr), "train.lr", self.lr, "a positive number")
        require(positive(self.head_lr), "train.head_lr", self.head_lr, "a positive number")
        require(non_negative(self.weight_decay), "train.weight_decay", self.weight_decay, "0 or more")
        require(fraction(self.warmup_ratio), "train.warmup_ratio", self.warmup_ratio, "in [0, 1)")
        require(self.batch_dialogues >= 1, "train.batch_dialogues", self.batch_dialogues, "1 or more")
        require(non_negative(self.class_weight_power), "train.class_weight_power", self.class_weight_power, "0 or more")
        require(0 <= self.seed < 2**32, "train.seed", self.seed, "a whole number from 0 to 2**32 - 1")


@dataclass
class TfidfConfig:
    """Character n-gram TF-IDF + logistic regression (the simplest honest baseline)."""

    ngram_min: int = 1
    ngram_max: int = 3
    max_features: int = 200000
    c: float = 1.0
    balanced: bool = True

    def __post_init__(self) -> None:
        require(self.ngram_min >= 1, "tfidf.ngram_min", self.ngram_min, "1 or more")
        require(self.ngram_max >= self.ngram_min, "tfidf.ngram_max", self.ngram_max,
                f"at least tfidf.ngram_min ({self.ngram_min})")
        require(self.max_features >= 1, "tfidf.max_features", self.max_features, "1 or more")
        require(positive(self.c), "tfidf.c", self.c, "a positive number")


@dataclass(frozen=True)
class PromptSettings(PromptConfig):
    """The recipe's `llm.prompt`: the prompt settings (declared once, in `erckit.prompts.PromptConfig`), with
    language `auto` (detected from the training text), and the auxiliary same-speaker task."""

    language: str = setting("auto", "zh | en | auto (detected from the training text)", ("auto", *TEMPLATES))
    same_speaker: int = setting(0, "auxiliary same-speaker questions per training dialogue (window form)")

    def __post_init__(self) -> None:
        try:  # the prompt settings are checked where they are declared, in erckit.prompts
            self.prompt_config("zh" if self.language == "auto" else self.language)
        except ValueError as err:
            raise ConfigError(f"llm.prompt.{err}") from None
        require(self.same_speaker >= 0, "llm.prompt.same_speaker", self.same_speaker, "0 or more")
        require(self.form == "window" or self.same_speaker == 0, "llm.prompt.same_speaker", self.same_speaker,
                "0 in the dialogue form (the same-speaker task exists in the window form only)")

    def prompt_config(self, language: str) -> PromptConfig:
        """The erckit.prompts.PromptConfig of these settings, in `language` (a detected one for 'auto')."""
        return PromptConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PromptConfig)}
                            | {"language": language})


@dataclass
class LoraSettings:
    """LoRA adapters (peft)."""

    rank: int = 64
    alpha: int = 128
    dropout: float = 0.0
    target_modules: str = "all-linear"  # peft's "all-linear" excludes the output head (Baichuan2's NormHead too)

    def __post_init__(self) -> None:
        require(self.rank >= 1, "llm.lora.rank", self.rank, "1 or more")
        require(self.alpha >= 1, "llm.lora.alpha", self.alpha, "1 or more")
        require(fraction(self.dropout), "llm.lora.dropout", self.dropout, "in [0, 1)")
        require(bool(self.target_modules), "llm.lora.target_modules", self.target_modules, "module names or all-linear")


@dataclass
class LLMConfig:
    """Fine-tuning a chat LLM on the emotion prompts, with checkpoints chosen by validation macro-F1."""

    model: str = PACKAGED_LM_NAME
    template: str = "plain"  # baichuan2 | chatml | gemma | plain | qwen2.5 (erckit.llm.chat)
    trust_remote_code: bool = False
    finetuning: str = "lora"  # lora | qlora (needs bitsandbytes + a GPU) | full
    lora: LoraSettings = field(default_factory=LoraSettings)
    prompt: PromptSettings = field(default_factory=PromptSettings)
    max_length: int = 1024
    pack_tokens: int = 2048  # dialogue form: dialogues packed into rows of up to N tokens (a row per step)
    class_weight_power: float = 0.0  # answer loss weight ∝ (1 / class frequency) ** power; 0 = unweighted
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
    save_total_limit: int = 3  # checkpoints kept in all, the best and the latest among them (more: select ranks more)
    precision: str = "auto"  # auto (bf16 where native, else fp16, on GPU; fp32 on CPU) | fp32 | fp16 | bf16
    gradient_checkpointing: bool = False
    deepspeed: str | None = None  # a DeepSpeed JSON file, or a shipped one by name: zero2, zero3
    logging_steps: int = 10

    def __post_init__(self) -> None:
        require(bool(self.model), "llm.model", self.model, "a model folder, hub id or packaged:<name>")
        require(self.finetuning in FINETUNING, "llm.finetuning", self.finetuning, " or ".join(FINETUNING))
        require(self.precision in PRECISIONS, "llm.precision", self.precision, ", ".join(PRECISIONS))
        require(self.max_length >= 2, "llm.max_length", self.max_length, "at least 2 tokens")
        require(self.pack_tokens >= 1, "llm.pack_tokens", self.pack_tokens, "1 or more")
        require(non_negative(self.class_weight_power), "llm.class_weight_power", self.class_weight_power, "0 or more")
        require(positive(self.epochs), "llm.epochs", self.epochs, "a positive number")
        require(self.max_steps == -1 or self.max_steps >= 1, "llm.max_steps", self.max_steps, "-1 (use epochs) or 1 or more")
        require(positive(self.lr), "llm.lr", self.lr, "a positive number")
        require(fraction(self.warmup_ratio), "llm.warmup_ratio", self.warmup_ratio, "in [0, 1)")
        for key in ("batch_size", "grad_accum", "eval_steps", "eval_batch_size", "logging_steps"):
            require(getattr(self, key) >= 1, f"llm.{key}", getattr(self, key), "1 or more")
        require(self.eval_subset >= 0, "llm.eval_subset", self.eval_subset, "0 (all) or more")
        require(self.save_total_limit >= 1, "llm.save_total_limit", self.save_total_limit, "1 or more")
        require(self.deepspeed is None or bool(self.deepspeed), "llm.deepspeed", self.deepspeed,
                "null or a DeepSpeed JSON config file")

    def check_names(self) -> None:
        """The template and scheduler, whose names live in erckit.llm.chat and transformers."""
        from transformers import SchedulerType

        from erckit.llm.chat import CHAT_TEMPLATES

        require(self.template in CHAT_TEMPLATES, "llm.template", self.template, ", ".join(CHAT_TEMPLATES))
        schedulers = [s.value for s in SchedulerType]
        require(self.scheduler in schedulers, "llm.scheduler", self.scheduler, ", ".join(schedulers))


@dataclass
class FusionConfig:
    """Trained model folders whose label probabilities are averaged (`model: fusion`, erckit ensemble --models)."""

    members: list[str] = field(default_factory=list)  # model folders, kept as absolute paths
    weights: list[float] | None = None  # one per member; null: chosen on data.validation (macro-F1)
    trust_remote_code: bool = False  # training loads members that run their own code (erckit.remote_code)

    def __post_init__(self) -> None:
        self.members = [str(Path(member).resolve()) for member in self.members]


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
    fusion: FusionConfig = field(default_factory=FusionConfig)
    report_to: list[str] = field(default_factory=list)  # experiment tracking, e.g. [tensorboard] (erckit.tracking)

    def __post_init__(self) -> None:
        require(self.model in MODEL_TYPES, "model", self.model, f"one of {', '.join(MODEL_TYPES)}")
        require(bool(self.out), "out", self.out, "a folder")
        allowed = kinds.get(self.model).REPORTERS
        require(all(r in allowed for r in self.report_to), "report_to", self.report_to,
                f"a list of {', '.join(allowed)}" if allowed else f"empty: a {self.model} run has nothing to track")
        kinds.get(self.model).check(self)  # what spans its sections


def _convert(value: Any, kind: Any, where: str, key: str) -> Any:
    """Check or convert a YAML value (at dotted `key` of `where`) to the annotated field type."""
    origin = typing.get_origin(kind)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(o for o in options if o is not type(None))
        origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(_at(where, key, "expected a mapping"))
        return from_dict(kind, value, where, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(_at(where, key, "expected a list"))
        (item,) = typing.get_args(kind)
        return [_convert(v, item, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(_at(where, key, "expected a mapping"))
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
    raise ConfigError(_at(where, key, f"expected {getattr(kind, '__name__', kind)}, got {_shown(value)}"))


def _shown(value: Any) -> str:
    """A wrong value as a refusal shows it: a value YAML can write as its repr (cut at 80 characters), anything
    else (a DataFrame given to `erckit.train`) by its type."""
    if not isinstance(value, (str, int, float, bool, list, dict, type(None))):
        return f"a {type(value).__name__}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:79]}…"


def _at(where: str, key: str, problem: str) -> str:
    """A config error: the file (or command) it came from, the dotted key, the problem; blanks left out."""
    return ": ".join(part for part in (where, key, problem) if part)


def _dotted(section: str, name: str) -> str:
    """A key's dotted name in its section (`llm.prompt.window`); a top-level key as it is."""
    return f"{section}.{name}" if section else name


def from_dict(cls: type, data: dict[str, Any], where: str = "config", key: str = "") -> Any:
    """Build dataclass `cls` from the mapping at dotted `key` of `where` (a file, or a command); unknown keys
    and wrong types are refused, naming both."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # a field the code fills is no key of a file
    unknown = sorted(set(data) - names, key=str)  # YAML reads `1:` or `yes:` as a number or a bool
    if unknown:
        # `tfidf: unknown key 'tfidf.nope'`, not `tfidf: tfidf: ...`
        raise ConfigError(_at(where, "", f"unknown key {_dotted(key, unknown[0])!r} (known: {', '.join(sorted(names))})"))
    required = [f.name for f in dataclasses.fields(cls) if f.init and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    if missing := [name for name in required if name not in data]:
        raise ConfigError(_at(where, "", f"missing key {_dotted(key, missing[0])!r}"))
    try:
        return cls(**{k: _convert(v, hints[k], where, _dotted(key, k)) for k, v in data.items()})
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(_at(where, key, str(err))) from None


Override = str | tuple[str, Any]
"""`key=value` (the command line's: the value parsed as a YAML scalar) or a (key, value) pair (the Python API's:
the value taken as given)."""


def apply_overrides(data: dict[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """Set dotted keys, in order (a key given twice: the last one)."""
    for item in overrides:
        if isinstance(item, str):
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"override {item!r}: expected key=value")
            value = parse_yaml(raw, f"override {item!r}: not a plain YAML value") if raw else None
        else:
            key, value = item
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node[parts[-1]] = value
    return data


class _UniqueKeys(yaml.SafeLoader):
    """yaml.SafeLoader refusing a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults`: merged by SafeLoader, keys may repeat
                continue
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice (line {line})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)`; malformed YAML, a key given twice in one mapping, or a tag it refuses or cannot
    build (`!!python/...`, `!!int x`, `!!timestamp x`), is refused in one line starting with `where`."""
    try:
        return yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader
    except yaml.MarkedYAMLError as err:  # the parser's: where it stopped, and why
        mark = err.problem_mark or err.context_mark
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{where}{at}: {', '.join(filter(None, (err.context, err.problem)))}") from None
    except (yaml.YAMLError, ValueError, TypeError, AttributeError) as err:  # pyyaml's constructors raise all four
        raise ConfigError(f"{where}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a mapping."""
    text = read_text(path, "utf-8", "settings")[0]
    data = parse_yaml(text, f"{path}: malformed YAML") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(path: str | Path | None, overrides: Iterable[Override] = ()) -> RunConfig:
    """A RunConfig from a YAML recipe (a file, or a shipped recipe's name: erckit.recipes) or defaults,
    with overrides applied; a key its model kind never reads (`train.epochs` in an llm recipe) is refused,
    naming it."""
    from erckit.recipes import resolve

    data = read_yaml(resolve(path)) if path else {}
    data = apply_overrides(data, list(overrides))
    if path and "model" not in data:
        raise ConfigError(f"{path}: names no model (model: {', '.join(MODEL_TYPES)})")
    try:
        config = from_dict(RunConfig, data, "")  # keys named alone: the recipe's name goes in front, below
        if unread := kinds.unread_key(config.model, data):
            raise ConfigError(f"{unread} is not read by model {config.model} (it reads {kinds.described(config.model)}, "
                              f"{', '.join(kinds.ALWAYS)}); remove it")
        return config
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain mapping (for saving next to the model)."""
    return dataclasses.asdict(config)
