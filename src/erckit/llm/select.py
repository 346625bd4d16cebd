"""`erckit select`: rank saved checkpoints by validation macro-F1 (label scoring).

Works on erckit runs and on runs made elsewhere (e.g. LLaMA-Factory's checkpoint-N folders of LoRA
adapters, or full-model checkpoints): every folder holding an adapter or a model is scored the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erckit.data import DataError, Dialogue
from erckit.labels import LABELS
from erckit.llm.chat import ChatTemplate
from erckit.llm.scoring import label_log_probs
from erckit.metrics import scores
from erckit.prompts import PromptConfig, emotion_examples


def is_adapter(checkpoint: Path) -> bool:
    """Whether a checkpoint is a LoRA adapter (scored on top of a base model) rather than a full model."""
    return (checkpoint / "adapter_config.json").exists()


def find_checkpoints(run: Path) -> list[Path]:
    """checkpoint-N folders of a run (by N), or the folder itself if it is a checkpoint."""
    def is_checkpoint(p: Path) -> bool:
        return is_adapter(p) or (p / "config.json").exists()

    found = sorted(
        (p for p in run.glob("checkpoint-*") if p.is_dir() and is_checkpoint(p)),
        key=lambda p: int(p.name.rsplit("-", 1)[-1]) if p.name.rsplit("-", 1)[-1].isdigit() else 0,
    )
    return found or ([run] if is_checkpoint(run) else [])


def rank_checkpoints(
    checkpoints: list[Path],
    base_model: str | None,
    validation: list[Dialogue],
    prompts: PromptConfig,
    template: ChatTemplate,
    *,
    batch_size: int = 8,
    limit: int = 0,
    trust_remote_code: bool = False,
) -> list[dict]:
    """Validation scores of every checkpoint, best macro-F1 first (ties: the earlier checkpoint)."""
    from erckit.llm.loading import load_model

    adapters = [c for c in checkpoints if is_adapter(c)]
    if adapters and not base_model:
        raise DataError(adapters[0], None, "is a LoRA adapter checkpoint: give --base, the base model it was trained on")
    examples = emotion_examples(validation, prompts)
    if limit:
        examples = examples[:limit]
    gold = [e.answer for e in examples]
    rows = []
    for order, checkpoint in enumerate(checkpoints):
        adapter = is_adapter(checkpoint)
        model, tokenizer = load_model(
            base_model if adapter else str(checkpoint),
            adapter=str(checkpoint) if adapter else None,
            trust_remote_code=trust_remote_code,
        )
        logp = label_log_probs(model, tokenizer, [e.prompt for e in examples], template, batch_size=batch_size)
        result = scores(gold, [LABELS[i] for i in np.argmax(logp, axis=1)])
        rows.append({"checkpoint": str(checkpoint), "order": order} | {
            k: result[k] for k in ("macro_f1", "weighted_f1", "accuracy")
        })
        del model
    return sorted(rows, key=lambda r: (-r["macro_f1"], r["order"]))

