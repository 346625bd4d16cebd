"""The one place a causal LM is loaded, for training, prediction and merging.

The model is a local folder, a hub id, or `packaged:<name>` (a model built from a registry package,
see `erckit.llm.packaged`). Here, and only here:
- the dtype follows the precision setting (`precision_dtype`: bf16 only where the GPU has it natively);
- each process of a multi-GPU launch puts a quantised model on its own GPU (`device_map` per local rank);
- the model's own code runs only when asked (`trust_remote_code`);
- a config that stores `gradient_checkpointing` as a tuple (Baichuan2's) does not switch it on;
- the tokenizer pads on the left with a pad token (EOS when it has none), and a Baichuan-style
  sentencepiece tokenizer that fails on transformers >= 4.34 is loaded all the same (`load_tokenizer`);
- a LoRA adapter is recognised (`is_adapter`) and applied.
"""

from __future__ import annotations

from pathlib import Path

import torch

from erckit.cache import is_packaged
from erckit.config import PRECISIONS, ConfigError
from erckit.data import DataError
from erckit.formats.encoding import read_json

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def is_adapter(folder: str | Path | None) -> bool:
    """Whether a folder is a PEFT LoRA adapter (applied on top of a base model) rather than a model."""
    return folder is not None and (Path(folder) / "adapter_config.json").exists()


def resolve_source(model: str) -> str:
    """A local folder or hub id; `packaged[:name]` models are built (or found in the cache) first."""
    if is_packaged(model):
        from erckit.llm.packaged import resolve_model

        return str(resolve_model(model))
    return model


def resolve_device(device: str | None) -> str:
    """`None`: the first CUDA GPU when there is one, else the CPU. `auto` spreads a model over all GPUs. A device
    torch does not know, or a GPU this machine lacks, is refused in one line."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "auto":
        return device
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ConfigError(f"--device {device}: not a device (cpu, cuda, cuda:N or auto)") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: this machine has no CUDA GPU (torch sees none); use cpu")
    return device


def native_bf16() -> bool:
    """bf16 in hardware (compute capability 8.0+: A100, H100, RTX 30xx+), not the emulation that
    `torch.cuda.is_bf16_supported()` also counts on V100 and T4."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)


def precision_dtype(precision: str, *, cuda: bool | None = None, bf16: bool | None = None) -> torch.dtype:
    """The dtype of a precision setting. `auto`: float32 on CPU, bfloat16 on a GPU with native bf16,
    else float16. (`cuda`, `bf16`: what the machine offers; detected when None.)"""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision != "auto":
        return DTYPES[precision]
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return torch.float32
    return torch.bfloat16 if (native_bf16() if bf16 is None else bf16) else torch.float16


def run_dtype(dtype: str, trained: str, device: str | None, *, cuda: bool | None = None,
              bf16: bool | None = None) -> str:
    """A run's prediction dtype: `auto` on a GPU is the precision it was trained in (a run record's
    `precision`: fp16 stays fp16 where the GPU also has bf16; bf16 only where the GPU has it natively, else the
    precision rule), else `dtype` as given (`auto` on the CPU: float32). (`cuda`, `bf16`: what the machine
    offers; detected when None.)"""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    on_cpu = not cuda or (device is not None and device != "auto" and torch.device(device).type == "cpu")
    if dtype != "auto" or on_cpu or (trained == "bf16" and not (native_bf16() if bf16 is None else bf16)):
        return dtype
    return trained


def load_dtype(dtype: str, device: str | None) -> torch.dtype:
    """The dtype `load_model` loads weights in for `dtype` on `device` (as `load_model` takes them)."""
    device = resolve_device(device)
    return resolve_dtype(dtype, "cuda" if device == "auto" else device)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """A prediction dtype: `auto` is the precision rule (float32 on CPU); or a named dtype."""
    if dtype == "auto":
        return precision_dtype("auto", cuda=device != "cpu" and torch.cuda.is_available())
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def local_rank() -> int:
    """This process's GPU index in a torchrun / accelerate launch (0 when not launched so)."""
    from accelerate import PartialState

    return PartialState().local_process_index


def rank_device_map(quantized: bool, *, cuda: bool | None = None, rank: int | None = None) -> dict | None:
    """`{"": local_rank}` for a quantised model on CUDA (bitsandbytes cannot be moved after loading,
    so each process must quantise onto its own GPU); None otherwise (the Trainer places the model)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not (quantized and cuda):
        return None
    return {"": local_rank() if rank is None else rank}


def model_config(source: str, trust_remote_code: bool):
    """The model's config, with a `gradient_checkpointing` stored as a tuple set to False.

    Baichuan2's config stores it as a tuple (`(False,)`, always true): transformers then switches
    reentrant checkpointing on for every layer whatever the run asked (LoRA weights inside get no
    gradient; DDP fails at the first backward). The run's own setting is applied after loading.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    if isinstance(getattr(config, "gradient_checkpointing", None), tuple):
        config.gradient_checkpointing = False
    return config


def load_causal_lm(
    model: str,
    *,
    dtype: torch.dtype | str = torch.float32,
    trust_remote_code: bool = False,
    device_map: dict | str | None = None,
    quantization_config=None,
):
    """The causal LM of `model` (folder, hub id, packaged name). `dtype="auto"` keeps the stored dtype."""
    from transformers import AutoModelForCausalLM

    source = resolve_source(model)
    placement = {"device_map": device_map} if device_map is not None else {}
    if quantization_config is not None:
        placement["quantization_config"] = quantization_config
    return AutoModelForCausalLM.from_pretrained(
        source, config=model_config(source, trust_remote_code), dtype=dtype, trust_remote_code=trust_remote_code,
        **placement,
    )


def sentencepiece_first(cls):
    """A subclass of a remote tokenizer class whose `__init__` reads `self.sp_model` (through
    `vocab_size` / `get_vocab`) in `super().__init__` before loading it, as Baichuan2's does: the
    subclass loads the sentencepiece model first, then runs the class's own `__init__` unchanged."""

    class SentencepieceFirst(cls):
        def __init__(self, vocab_file=None, *args, **kwargs):
            import sentencepiece

            self.sp_model = sentencepiece.SentencePieceProcessor(**(kwargs.get("sp_model_kwargs") or {}))
            self.sp_model.Load(vocab_file)
            super().__init__(vocab_file, *args, **kwargs)

    # Saved as the class it extends: tokenizer_config.json keeps naming the model's own tokenizer file.
    SentencepieceFirst.__name__ = SentencepieceFirst.__qualname__ = cls.__name__
    SentencepieceFirst.__module__ = cls.__module__
    return SentencepieceFirst


def remote_tokenizer_class(source: str):
    """The tokenizer class a folder's tokenizer_config.json names in its `auto_map` (remote code)."""
    from transformers.dynamic_module_utils import get_class_from_dynamic_module
    from transformers.models.auto.tokenization_auto import get_tokenizer_config

    auto_map = get_tokenizer_config(source).get("auto_map", {}).get("AutoTokenizer")
    reference = auto_map[0] if isinstance(auto_map, list) else auto_map
    if not reference:
        return None
    return get_class_from_dynamic_module(reference, source)


def construct_tokenizer(source: str, trust_remote_code: bool):
    """AutoTokenizer; when a remote sentencepiece tokenizer fails to construct (Baichuan2's on
    transformers >= 4.34: 'no attribute sp_model', or a TypeError from the property it breaks), its
    class loaded with the sentencepiece model first (`sentencepiece_first`); else a one-line error
    naming the fix."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    except ModuleNotFoundError as err:
        if err.name == "sentencepiece":
            raise ValueError(f"the tokenizer of {source} needs sentencepiece: pip install sentencepiece") from None
        raise
    except (AttributeError, TypeError) as err:
        cls = remote_tokenizer_class(source) if trust_remote_code else None
        if cls is None or "vocab_file" not in getattr(cls, "vocab_files_names", {}):
            raise
        first_error = f"{type(err).__name__}: {err}"
    try:
        return sentencepiece_first(cls).from_pretrained(source)
    except Exception as err:  # noqa: BLE001 (the workaround did not fit this tokenizer: say what to change)
        raise ValueError(
            f"the tokenizer of {source} fails to construct ({first_error}), as Baichuan2's does on "
            "transformers >= 4.34, and loading its sentencepiece model first did not help "
            f"({type(err).__name__}: {err}); fix: in its tokenization file, move `super().__init__(...)` "
            "below `self.sp_model.Load(vocab_file)`"
        ) from None


def load_tokenizer(source: str, *, adapter: str | None = None, trust_remote_code: bool = False):
    """The adapter's tokenizer if it saved one, else the model's; left padding, with a pad token."""
    has_own = adapter is not None and (Path(adapter) / "tokenizer_config.json").exists()
    tokenizer = construct_tokenizer(str(adapter) if has_own else resolve_source(source), trust_remote_code)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer of {source} has neither a pad nor an EOS token; batching needs one")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def load_model(
    model: str,
    *,
    adapter: str | None = None,
    dtype: str = "auto",
    trust_remote_code: bool = False,
    device: str | None = None,
    merge: bool = True,
):
    """(model in eval mode, tokenizer) for prediction.

    `adapter`: a PEFT LoRA folder (checked by `erckit.llm.run.open_run`) applied on top; merged into the
    weights (`merge=True`, faster inference, same results up to rounding) or kept as a PeftModel.
    `dtype`: `auto` is float32 on CPU, bf16 (native) or fp16 on GPU. `device`: None = cuda if available else cpu; `auto` =
    accelerate's device_map over all GPUs. Remote code runs only with `trust_remote_code=True`.
    """
    tokenizer = load_tokenizer(model, adapter=adapter, trust_remote_code=trust_remote_code)  # fails fast
    torch_dtype = load_dtype(dtype, device)
    device = resolve_device(device)
    lm = load_causal_lm(model, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                        device_map="auto" if device == "auto" else None)
    if device != "auto":
        lm = lm.to(device)
    if adapter is not None:
        lm = apply_adapter(lm, adapter, merge=merge)
    lm.eval()
    return lm, tokenizer


def apply_adapter(lm, adapter: str | Path, *, merge: bool = True):
    """`lm` with the PEFT LoRA `adapter` on top: merged into its weights, or kept as a PeftModel."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(lm, str(adapter))
    return model.merge_and_unload() if merge else model


def check_adapter(adapter: str | Path) -> None:
    """Refuse an adapter folder without a PEFT adapter_config.json naming its peft_type."""
    path = Path(adapter) / "adapter_config.json"
    if not path.exists():
        raise DataError(adapter, None, "is not a PEFT adapter folder (no adapter_config.json)")
    config = read_json(path, "settings")
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise DataError(path, None, 'is not a PEFT adapter config (no "peft_type", e.g. "LORA")')
