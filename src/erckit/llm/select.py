"""`erckit select`: rank saved checkpoints by validation macro-F1 (label scoring).

Works on erckit runs and on runs made elsewhere (e.g. LLaMA-Factory's checkpoint-N folders of LoRA
adapters, or full-model checkpoints): every folder holding an adapter or a model is scored the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erckit.data import Dialogue, first_utterances
from erckit.labels import LABELS
from erckit.llm.engines import DEFAULT_OPTIONS, EngineOptions, check_own_code, load_engine, score_dialogues
from erckit.llm.loading import is_adapter
from erckit.llm.run import LLMRun
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
    runs: list[LLMRun],
    validation: list[Dialogue],
    *,
    batch_size: int | None = None,
    limit: int = 0,
    options: EngineOptions = DEFAULT_OPTIONS,
) -> list[dict]:
    """Validation scores of every checkpoint, best macro-F1 first (ties: the earlier checkpoint).

    `runs[i]`: `checkpoints[i]` opened (`erckit.llm.run.open_run`): each checkpoint is scored with the
    template, prompts, max length and batch settings it was trained with, by the engine `erckit predict`
    uses (`batch_size`: None for the run's).
    """
    rows = []
    dialogues = first_utterances(validation, limit)
    gold = [u.label for d in dialogues for u in d.utterances]
    for run in runs:  # every checkpoint's own code refused before the first is scored
        check_own_code(run, options)
    for order, (checkpoint, run) in enumerate(zip(checkpoints, runs, strict=True)):
        engine = load_engine(run, "score", options)
        logp = score_dialogues(engine, dialogues, run.record.prompt, batch_size or run.record.eval_batch_size,
                               progress=True)
        result = scores(gold, [LABELS[i] for i in np.argmax(logp, axis=1)])
        rows.append({"checkpoint": str(checkpoint), "order": order} | {
            k: result[k] for k in ("macro_f1", "weighted_f1", "accuracy")
        })
        del engine
    return sorted(rows, key=lambda r: (-r["macro_f1"], r["order"]))
