"""Experiment tracking: TensorBoard event files of a training run (the recipe's `report_to: [tensorboard]`).

The LLM trainer passes `report_to` to the Hugging Face Trainer, which writes `<out>/runs/<time>_<host>/`; the
encoder + BiGRU trainer writes each epoch's loss and validation scores under `<out>/runs/` with the same tags
(train/loss, eval/macro_f1, eval/weighted_f1). View them with `tensorboard --logdir <out>/runs`.
"""

from __future__ import annotations

from pathlib import Path

LOG_DIR = "runs"
TAGS = {"train_loss": "train/loss", "val_macro_f1": "eval/macro_f1", "val_weighted_f1": "eval/weighted_f1"}


def log_epoch(out: Path, report_to: list[str], record: dict[str, float]) -> None:
    """Write one epoch's record (epoch, train_loss, val_*) as TensorBoard scalars, if the run reports to it."""
    if "tensorboard" not in report_to:
        return
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(Path(out) / LOG_DIR)) as writer:
        for key, value in record.items():
            if key in TAGS:
                writer.add_scalar(TAGS[key], value, record["epoch"])


def read_scalars(out: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a run's TensorBoard event files: tag -> [(step, value)], in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((Path(out) / LOG_DIR).rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return {tag: sorted(values) for tag, values in scalars.items()}
