"""Loading a causal LM (and an optional LoRA adapter) with a tokenizer ready for batched prediction.

The model is a local folder, a hub id, or `packaged:<name>` (a model built from a registry package,
see `erckit.llm.packaged`). The tokenizer pads on the left with a pad token (EOS when it has none),
which is what every prediction backend needs for batches of prompts of different lengths.
"""

from __future__ import annotations

from pathlib import Path

import torch

from erckit.data import DataError
from erckit.formats.encoding import read_json
from erckit.llm.merge import LLM_INFO  # `erckit merge` records the chat template there

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def is_packaged(model: str) -> bool:
    return model == "packaged" or model.startswith("packaged:")


def resolve_source(model: str) -> str:
    """A local folder or hub id; `packaged[:name]` models are built (or found in the cache) first."""
    if is_packaged(model):
        from erckit.llm.packaged import resolve_model

        return str(resolve_model(model))
    return model


def resolve_device(device: str | None) -> str:
    """`None`: the first CUDA GPU when there is one, else the CPU. `auto` spreads a model over all GPUs."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto`: float32 on CPU; bfloat16 on a GPU that supports it, else float16."""
    if dtype == "auto":
        if device == "cpu" or not torch.cuda.is_available():
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r} (choose from auto, {', '.join(DTYPES)})")
    return DTYPES[dtype]


def load_tokenizer(source: str, *, adapter: str | None = None, trust_remote_code: bool = False):
    """The adapter's tokenizer if it saved one, else the model's; left padding, with a pad token."""
    from transformers import AutoTokenizer

    has_own = adapter is not None and (Path(adapter) / "tokenizer_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(adapter if has_own else source, trust_remote_code=trust_remote_code)
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

    `adapter`: a PEFT LoRA folder applied on top; merged into the weights (`merge=True`, faster
    inference, same results up to rounding) or kept as a PeftModel. `device`: None = cuda if
    available else cpu; `auto` = accelerate's device_map over all GPUs. Remote code runs only
    with `trust_remote_code=True`.
    """
    from transformers import AutoModelForCausalLM

    if adapter is not None:
        check_adapter(adapter)
    source = resolve_source(model)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, "cuda" if device == "auto" else device)
    placement = {"device_map": "auto"} if device == "auto" else {}
    lm = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch_dtype, trust_remote_code=trust_remote_code, **placement
    )
    if device != "auto":
        lm = lm.to(device)
    if adapter is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter)
        if merge:
            lm = lm.merge_and_unload()
    lm.eval()
    tokenizer = load_tokenizer(source, adapter=adapter, trust_remote_code=trust_remote_code)
    return lm, tokenizer


def check_adapter(adapter: str | Path) -> None:
    """Refuse an adapter folder without a PEFT adapter_config.json naming its peft_type."""
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise DataError(adapter, None, "is not a PEFT adapter folder (no adapter_config.json)")
    config = read_json(path)
    if not isinstance(config, dict) or not isinstance(config.get("peft_type"), str):
        raise DataError(path, None, 'is not a PEFT adapter config (no "peft_type", e.g. "LORA")')


def saved_template(model: str, adapter: str | None = None) -> str | None:
    """The chat template name recorded next to the weights (`erckit_llm.json`), if any; adapter first."""
    for folder in (adapter, model):
        if folder is None or is_packaged(folder):
            continue
        info = Path(folder) / LLM_INFO
        if info.is_file():
            record = read_json(info)
            name = record.get("template") if isinstance(record, dict) else None
            if isinstance(name, str) and name:
                return name
    return None
