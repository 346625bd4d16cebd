"""LoRA on the packaged gemma-3-270m, BMELD Chinese, on CPU: train, select by dev macro-F1, score dev and test.

    .venv/bin/python bench/bmeld_gemma.py [--config gemma-270m-lora] [--out runs/bench_gemma] \
        [--dev-limit N] [--test-limit N] [--train-only] [key=value ...]

Trains the recipe (the window form by default; --config gemma-270m-dialogue for the dialogue form) on BMELD train (overrides set the budget, e.g. llm.max_steps=150),
keeps the checkpoint with the best macro-F1 on the first `llm.eval_subset` dev utterances, then labels the
first N dev and test utterances (0 = all) by label scoring (not with --train-only, which keeps the
in-training dev figures only). Results: <out>/results.json.
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
from erckit.data import first_utterances, iter_utterances
from erckit.formats import read_dialogues
from erckit.metrics import scores
from erckit.models import predict, train
from erckit.predictions import write_predictions

REPO = Path(__file__).resolve().parents[1]
BMELD = Path(os.environ.get("BMELD") or REPO.parent / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_gemma")
    parser.add_argument("--config", default="gemma-270m-lora")
    parser.add_argument("--dev-limit", type=int, default=0)
    parser.add_argument("--test-limit", type=int, default=0)
    parser.add_argument("--train-only", action="store_true", help="no dev/test prediction after training")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    out = Path(args.out)
    data = [f"data.train={BMELD / 'train_sent_emo.csv'}", f"data.validation={BMELD / 'dev_sent_emo.csv'}"]
    config = load_config(args.config, [*data, f"out={out / 'model'}", *args.overrides])
    started = time.perf_counter()
    info = train(config)
    results = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "config": args.config, "overrides": args.overrides, "train_wall_seconds": time.perf_counter() - started,
        "summary": {k: v for k, v in info["summary"].items() if k != "history"},
        "history": info["summary"]["history"],
    }
    splits = () if args.train_only else (("dev", "dev", args.dev_limit), ("test", "test", args.test_limit))
    for split, file, limit in splits:
        dialogues = first_utterances(read_dialogues(BMELD / f"{file}_sent_emo.csv"), limit)
        started = time.perf_counter()
        predictions = predict(out / "model", dialogues)
        seconds = time.perf_counter() - started
        write_predictions(out / f"{split}_predictions.jsonl", predictions)
        gold = [u.label for u in iter_utterances(dialogues)]
        results[split] = scores(gold, [p.label for p in predictions]) | {"utterances_per_second": len(gold) / seconds}
        print(split, {k: results[split][k] for k in ("macro_f1", "weighted_f1", "n")})
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
