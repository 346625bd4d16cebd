"""`erckit select`: rank saved checkpoints by validation macro-F1 (label scoring).

Works on erckit runs and on runs made elsewhere (e.g. LLaMA-Factory's checkpoint-N folders of LoRA
adapters, or full-model checkpoints): every folder holding an adapter or a model is scored the same way.
Resumable: each checkpoint's scores are kept as soon as it is scored (`erckit.llm.resume`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from erckit.data import DataError, Dialogue, first_utterances
from erckit.labels import LABELS
from erckit.llm.engines import DEFAULT_OPTIONS, EngineOptions, check_own_code, load_engine, score_dialogues
from erckit.llm.loading import is_adapter
from erckit.llm.resume import progress_writer, read_progress
from erckit.llm.run import LLMRun
from erckit.metrics import scores

SCORES = ("macro_f1", "weighted_f1", "accuracy")


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
    progress: Path | None = None,
    settings: dict | None = None,
) -> list[dict]:
    """Validation scores of every checkpoint, best macro-F1 first (ties: the earlier checkpoint).

    `runs[i]`: `checkpoints[i]` opened (`erckit.llm.run.open_run`): each checkpoint is scored with the
    template, prompts, max length and batch settings it was trained with, by the engine `erckit predict`
    uses (`batch_size`: None for the run's). `progress`: a file keeping each checkpoint's scores as soon as
    they are known; a rerun with the same `settings` (the validation data) scores only the checkpoints not in
    it, or whose run settings or files changed.
    """
    rows = []
    dialogues = first_utterances(validation, limit)
    gold = [u.label for d in dialogues for u in d.utterances]
    for run in runs:  # every checkpoint's own code refused before the first is scored
        check_own_code(run, options)
    with contextlib.ExitStack() as stack:
        earlier: dict[str, dict] = {}
        write: Callable[[str], None] = lambda text: None  # no progress file: scores are not kept
        if progress is not None:  # scores of an earlier run read back, new ones appended as they come
            earlier = _scored_before(progress, settings or {})
            write = stack.enter_context(progress_writer(progress, settings or {}))
        for order, (checkpoint, run) in enumerate(zip(checkpoints, runs, strict=True)):
            # what the scores depend on besides the data, as it reads back from the file
            record = json.loads(json.dumps(run.record.to_json())) | {"files": _stamp(checkpoint)}
            row = earlier.get(str(checkpoint))
            if row is None or row["record"] != record:
                engine = load_engine(run, "score", options)
                logp = score_dialogues(engine, dialogues, run.record.prompt, batch_size or run.record.eval_batch_size,
                                       progress=True)
                del engine
                result = scores(gold, [LABELS[i] for i in np.argmax(logp, axis=1)])
                row = {"checkpoint": str(checkpoint), "record": record} | {k: result[k] for k in SCORES}
                write(json.dumps(row, ensure_ascii=False) + "\n")
            rows.append({"checkpoint": str(checkpoint), "order": order} | {k: row[k] for k in SCORES})
    return sorted(rows, key=lambda r: (-r["macro_f1"], r["order"]))


def select_checkpoints(
    checkpoints: list[Path],
    runs: list[LLMRun],
    validation: list[Dialogue],
    out: str | Path | None,
    *,
    settings: dict,
    batch_size: int | None = None,
    limit: int = 0,
    options: EngineOptions = DEFAULT_OPTIONS,
) -> list[dict]:
    """`rank_checkpoints`, its ranking written to `out` as JSON ({"best": ..., "ranking": [...]}) when given:
    each checkpoint's scores are kept in `<out>.partial` as they come, under a lock (a second run into the
    same `out` is refused), and a rerun with the same `settings` resumes. Ctrl-C raises `Interrupted` saying
    what was kept."""
    from erckit.atomic import write_text_atomic
    from erckit.data import Interrupted
    from erckit.llm.resume import lock_partial, partial_path

    progress = partial_path(Path(out)) if out else None
    try:
        with lock_partial(progress, "select") if progress else contextlib.nullcontext():
            ranking = rank_checkpoints(checkpoints, runs, validation, batch_size=batch_size, limit=limit,
                                       options=options, progress=progress, settings=settings)
            if out:
                write_text_atomic(out, json.dumps({"best": ranking[0]["checkpoint"], "ranking": ranking},
                                                  indent=2) + "\n")
                progress.unlink()
    except KeyboardInterrupt:
        kept = f"the checkpoints scored so far are kept in {progress}" if progress and progress.exists() else None
        raise Interrupted(f"{kept}; run the same command again to resume" if kept else "nothing was written") from None
    return ranking


def _scored_before(progress: Path, settings: dict) -> dict[str, dict]:
    """Checkpoint -> its row, from the progress file of an earlier run with the same settings."""
    earlier = {}
    for number, row in read_progress(progress, settings, "select progress"):
        if not (isinstance(row, dict) and isinstance(row.get("checkpoint"), str) and isinstance(row.get("record"), dict)
                and all(isinstance(row.get(k), float) for k in SCORES)):
            raise DataError(progress, f"line {number}", "is not a scored checkpoint; delete the file to start over")
        earlier[row["checkpoint"]] = row
    return earlier


def _stamp(checkpoint: Path) -> dict[str, list[int]]:
    """Size and modification time of each file a checkpoint folder holds: a checkpoint written again is scored again."""
    stats = {f.name: f.stat() for f in sorted(checkpoint.iterdir()) if f.is_file()}
    return {name: [stat.st_size, stat.st_mtime_ns] for name, stat in stats.items()}
