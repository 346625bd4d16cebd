"""BMELD: the encoder+BiGRU recipe with early stopping beside the same recipe for a fixed 4 epochs.

    .venv/bin/python bench/bmeld_early_stopping.py [--out runs/bench_early_stopping] [--cap 10] [--patience 2]

Both runs train on BMELD train and keep their best epoch by dev macro-F1; the early-stopping run stops
after `--patience` epochs without a higher dev macro-F1, or at `--cap` epochs (its learning-rate schedule
spans the cap). Reported per run: epochs run, best epoch, dev macro-F1 by epoch, time (train s: the
training loops of all epochs, summed over resumes; wall s: the train call of this invocation, validation
scoring included), dev and test macro-F1 / weighted-F1 / per-class F1. Killed, the same command resumes the
unfinished run and reuses the finished one; <out>/results.json and .md are rewritten after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from datetime import date
from pathlib import Path

from bmeld_encoder import BMELD, run_method

from erckit.atomic import write_text_atomic
from erckit.formats import read_dialogues
from erckit.labels import LABELS


def markdown(runs: dict) -> str:
    """One row per run and split: epochs, time, scores, per-class F1."""
    head = ("| run | epochs run (best) | train s | wall s | split | macro-F1 | weighted-F1 | "
            + " | ".join(LABELS) + " |")
    lines = [head, "|---" * (7 + len(LABELS)) + "|"]
    for name, r in runs.items():
        wall = "reused" if r.get("reused") else f"{r['wall_train_seconds']:.0f}"
        for split in ("dev", "test"):
            s = r[split]
            per = " | ".join(f"{s['per_class'][label]['f1']:.3f}" for label in LABELS)
            lines.append(
                f"| {name} | {r['epochs_run']} ({r['best_epoch']}) | {r['train_seconds']:.0f} | {wall} | {split} "
                f"| **{s['macro_f1']:.4f}** | {s['weighted_f1']:.4f} | {per} |"
            )
    lines.append("")
    for name, r in runs.items():
        curve = ", ".join(f"{h['val_macro_f1']:.3f}" for h in r["history"])
        lines.append(f"- {name}: dev macro-F1 by epoch {curve}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_early_stopping")
    parser.add_argument("--cap", type=int, default=10, help="epoch cap of the early-stopping run")
    parser.add_argument("--patience", type=int, default=2)
    args = parser.parse_args()
    out = Path(args.out)
    splits = {split: read_dialogues(BMELD / f"{split}_sent_emo.csv") for split in ("dev", "test")}
    plans = {
        f"early_stopping_cap{args.cap}_patience{args.patience}": [f"train.epochs={args.cap}",
                                                                  f"train.patience={args.patience}"],
        "fixed_4_epochs": ["train.epochs=4", "train.patience=0"],
    }
    recipe = "bert_bigru"
    runs: dict[str, dict] = {}
    for name, overrides in plans.items():
        runs[name] = run_method(name, recipe, out, overrides, splits) | {"overrides": overrides}
        results = {
            "date": date.today().isoformat(), "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
            "recipe": recipe, "labels": list(LABELS), "runs": runs,
        }
        write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
        write_text_atomic(out / "results.md", markdown(runs))
    print(markdown(runs))


if __name__ == "__main__":
    main()
