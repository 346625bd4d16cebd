"""`erckit merge`: fold a LoRA adapter into its base model and export a full model folder.

The folder loads with `AutoModelForCausalLM.from_pretrained`, in the base model's own dtype (a bf16
base gives a bf16 folder, on CPU too), carries the tokenizer, a Jinja chat template equal to erckit's
layout (so vLLM and `apply_chat_template` see the same text), and the adapter's run record
(`erckit_llm.json`, now describing a full model): `erckit predict` on the folder uses the run's
template, prompt settings and max length.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from erckit.atomic import atomic_folder
from erckit.data import DataError
from erckit.llm.chat import ChatTemplate, get_template
from erckit.llm.record import BEST, RECORD_FILE, RunRecord, save_run_record
from erckit.runfolder import LEFT_BY_ERCKIT, check_out


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


def check_merge_out(out: Path) -> None:
    """Refuse an `out` that merging would destroy: it is replaced whole, so it must be new, empty or an earlier
    merge's folder (a run record, a full model, no subfolder) — never a training run, its checkpoints or the
    adapter or model it exported (`best/`, inside a folder with erckit_model.json)."""
    check_out(out, RECORD_FILE)
    if not out.is_dir() or not any(out.iterdir()):
        return
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.endswith(LEFT_BY_ERCKIT))
    trained = [name for name in ("erckit_model.json", "adapter_config.json") if (out / name).exists()]
    exported = out.resolve().name == BEST and (out.resolve().parent / "erckit_model.json").exists()  # a run's best/
    if folders or trained or exported:
        held = ", ".join([*folders[:3], *trained]) or "the weights of a training run"
        raise DataError(out, None, f"is a training run's folder or its exported model (it holds {held}), not an "
                        "earlier merge's output; choose a new or empty output folder (nothing was written)")


def merge_adapter(record: RunRecord, adapter: str | Path, out: str | Path, *, trust_remote_code: bool = False) -> Path:
    """Merge `adapter` (checked by `erckit.llm.run.open_run`) into `record.base_model` in the base's dtype and
    save it, with the record, to `out`. Remote code runs only with `trust_remote_code` (the user's word)."""
    from erckit.llm.loading import apply_adapter, load_causal_lm, load_tokenizer
    from erckit.remote_code import check_trusted

    check_trusted([adapter, record.base_model], trust_remote_code, asked=record.trust_remote_code)

    tokenizer = load_tokenizer(record.base_model, adapter=str(adapter), trust_remote_code=trust_remote_code)
    base = load_causal_lm(record.base_model, dtype="auto", trust_remote_code=trust_remote_code)
    merged = apply_adapter(base, adapter)
    tokenizer.chat_template = jinja_template(get_template(record.template))
    with atomic_folder(out) as folder:  # a killed merge leaves no half-written model folder
        merged.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        save_run_record(folder, replace(record, adapter=False))
    return Path(out)
