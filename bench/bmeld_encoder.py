"""BMELD (Chinese text): encoder+BiGRU vs the TF-IDF baseline, trained and measured side by side in one run.

    .venv/bin/python bench/bmeld_encoder.py [--out runs/bench_bmeld] [key=value ...]

Trains both models on BMELD train, selects on dev (the encoder's best epoch by dev macro-F1), and
reports dev and test macro-F1, weighted-F1, per-class F1, training time and prediction throughput.
Overrides apply to the bert_bigru recipe (e.g. train.epochs=3). Results: <out>/results.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.config import load_config
from erckit.data import iter_utterances
from erckit.formats import read_dialogues
from erckit.metrics import scores
from erckit.models import predict, train

BMELD = Path(os.environ.get("BMELD") or Path(__file__).resolve().parents[2] / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo
REPO = Path(__file__).resolve().parents[1]


def run_method(name: str, recipe: str | Path, out: Path, overrides: list[str], splits: dict) -> dict:
    data = [f"data.train={BMELD / 'train_sent_emo.csv'}", f"data.validation={BMELD / 'dev_sent_emo.csv'}"]
    config = load_config(recipe, [*data, f"out={out / name}", *overrides])
    started = time.perf_counter()
    info = train(config)
    result = {"train_seconds": info["summary"]["train_seconds"], "wall_train_seconds": time.perf_counter() - started,
              "reused": bool(info.get("reused"))}  # reused: wall_train_seconds is only the reuse check
    for key in ("best_epoch", "epochs_run", "stopped_early", "history"):
        if key in info["summary"]:
            result[key] = info["summary"][key]
    for split, dialogues in splits.items():
        started = time.perf_counter()
        predictions = predict(out / name, dialogues, progress=False)
        seconds = time.perf_counter() - started
        gold = [u.label for u in iter_utterances(dialogues)]
        result[split] = scores(gold, [p.label for p in predictions]) | {"utterances_per_second": len(gold) / seconds}
    return result


def markdown(results: dict) -> str:
    lines = [
        "| method | split | macro-F1 | weighted-F1 | acc | " + " | ".join(f"F1 {l}" for l in results["labels"]) + " | train s | predict utt/s |",
        "|---" * (7 + len(results["labels"])) + "|",
    ]
    for name, r in results["methods"].items():
        for split in ("dev", "test"):
            s = r[split]
            per = " | ".join(f"{s['per_class'][l]['f1']:.3f}" for l in results["labels"])
            lines.append(
                f"| {name} | {split} | **{s['macro_f1']:.4f}** | {s['weighted_f1']:.4f} | {s['accuracy']:.4f} | {per} "
                f"| {r['train_seconds']:.0f} | {s['utterances_per_second']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_bmeld")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = Path(args.out)
    splits = {s: read_dialogues(BMELD / f"{f}_sent_emo.csv") for s, f in (("dev", "dev"), ("test", "test"))}
    methods = {
        "tfidf": run_method("tfidf", "tfidf", out, [], splits),
        "bert_bigru": run_method("bert_bigru", "bert_bigru", out, args.overrides, splits),
    }
    from erckit.labels import LABELS

    results = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "overrides": args.overrides, "labels": list(LABELS), "methods": methods,
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    write_text_atomic(out / "results.md", table)
    print(table)


if __name__ == "__main__":
    main()
