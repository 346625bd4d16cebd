"""`erckit select`: rank saved checkpoints by validation macro-F1 (label scoring).

Works on erckit runs and on runs made elsewhere (e.g. LLaMA-Factory's checkpoint-N folders of LoRA
adapters, or full-model checkpoints): every folder holding an adapter or a model is scored the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erckit.data import Dialogue, first_utterances
from erckit.labels import LABELS
from erckit.llm.chat import get_template
from erckit.llm.dialogue_form import score_dialogues
from erckit.llm.loading import is_adapter
from erckit.llm.record import Resolved
from erckit.metrics import scores


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
    runs: list[Resolved],
    validation: list[Dialogue],
    *,
    batch_size: int = 8,
    limit: int = 0,
    trust_remote_code: bool = False,
) -> list[dict]:
    """Validation scores of every checkpoint, best macro-F1 first (ties: the earlier checkpoint).

    `runs[i]`: what to load for `checkpoints[i]` and its settings (`erckit.llm.record.resolve_run`):
    each checkpoint is scored with the template, prompts and max length it was trained with.
    """
    from erckit.llm.loading import load_model

    rows = []
    for order, (checkpoint, run) in enumerate(zip(checkpoints, runs, strict=True)):
        dialogues = first_utterances(validation, limit)
        model, tokenizer = load_model(
            run.model, adapter=run.adapter, trust_remote_code=trust_remote_code or run.record.trust_remote_code
        )
        logp = score_dialogues(model, tokenizer, dialogues, get_template(run.record.template), run.record.prompt,
                               batch_size=batch_size, max_length=run.record.max_length)
        gold = [u.label for d in dialogues for u in d.utterances]
        result = scores(gold, [LABELS[i] for i in np.argmax(logp, axis=1)])
        rows.append({"checkpoint": str(checkpoint), "order": order} | {
            k: result[k] for k in ("macro_f1", "weighted_f1", "accuracy")
        })
        del model
    return sorted(rows, key=lambda r: (-r["macro_f1"], r["order"]))
