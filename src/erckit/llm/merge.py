"""`erckit merge`: fold a LoRA adapter into its base model and export a full model folder.

The folder loads with `AutoModelForCausalLM.from_pretrained`, carries the tokenizer, a Jinja chat
template equal to erckit's layout (so vLLM and `apply_chat_template` see the same text), and
`erckit_llm.json` naming the template for `erckit predict`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from erckit.atomic import atomic_folder
from erckit.llm.chat import ChatTemplate

LLM_INFO = "erckit_llm.json"


def jinja_template(template: ChatTemplate) -> str:
    """A Jinja chat template producing `prefix + user + suffix` and `answer + answer_end` (or EOS)."""

    def literal(text: str) -> str:  # a JSON string literal is a valid Jinja string literal
        return json.dumps(text, ensure_ascii=False)

    end = literal(template.answer_end) if template.answer_end else "eos_token"
    return (
        "{% for message in messages %}{% if message['role'] == 'user' %}"
        f"{{{{ {literal(template.prefix)} + message['content'] + {literal(template.suffix)} }}}}"
        "{% elif message['role'] == 'assistant' %}"
        f"{{{{ message['content'] + {end} }}}}"
        "{% endif %}{% endfor %}"
    )


def merge_adapter(
    base_model: str, adapter: str | Path, out: str | Path, template: ChatTemplate, *, trust_remote_code: bool = False
) -> Path:
    """Merge `adapter` into `base_model` (float32 on CPU; the base's dtype on GPU) and save to `out`."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from erckit.llm.loading import check_adapter
    from erckit.llm.packaged import resolve_model

    check_adapter(adapter)
    source = resolve_model(base_model)
    dtype = "auto" if torch.cuda.is_available() else torch.float32
    base = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    has_tokenizer = (Path(adapter) / "tokenizer_config.json").exists()
    tokenizer = AutoTokenizer.from_pretrained(
        str(adapter) if has_tokenizer else source, trust_remote_code=trust_remote_code
    )
    tokenizer.chat_template = jinja_template(template)
    info = {"template": template.name, "base_model": base_model, "adapter": str(adapter)}
    with atomic_folder(out) as folder:  # a killed merge leaves no half-written model folder
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        (folder / LLM_INFO).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(out)
