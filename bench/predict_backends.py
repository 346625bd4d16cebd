"""score vs generate on BMELD dev, side by side in one run: throughput, invalid answers, macro-F1.

    .venv/bin/python bench/predict_backends.py [--limit N] [--adapter runs/.../best] [--out runs/bench_predict]

Models: the tiny in-process test LM (2 layers, hidden 32, XLM-R tokenizer) and the packaged
gemma-3-270m (`make gemma`), optionally with a LoRA adapter trained by erckit. Each backend labels the
same first N dev utterances (all by default); `generate` runs greedy with unparsed answers counted
and resolved by label scoring, so its macro-F1 is over every utterance.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.data import first_utterances
from erckit.formats import read_dialogues
from erckit.llm.predict import UnparsedAnswers, predict_run
from erckit.llm.run import RunFlags, open_run
from erckit.metrics import scores
from erckit.predictions import read_predictions

REPO = Path(__file__).resolve().parents[1]
BMELD = Path(os.environ.get("BMELD") or REPO.parent / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo


def dev_utterances(limit: int):
    """The first `limit` dev utterances (whole dialogues, the last one trimmed; 0 = all)."""
    return first_utterances(read_dialogues(BMELD / "dev_sent_emo.csv"), limit)


def tiny_model(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    return save_tiny(folder, tiny_model(tokenizer), tokenizer)


def run(name: str, model: str, adapter: str | None, template: str, dialogues, window: int, out: Path) -> dict:
    gold = {u.id: u.label for d in dialogues for u in d.utterances}
    llm = open_run(adapter or model, RunFlags(model if adapter else None, template, None, {"window": window}), "zh")
    result = {}
    for backend in ("score", "generate"):
        path = out / f"{name}_{backend}.jsonl"
        for stale in (path, Path(f"{path}.partial"), Path(f"{path}.unparsed.jsonl")):
            stale.unlink(missing_ok=True)
        kwargs = {"dialogues": dialogues, "backend": backend, "progress": False}
        started = time.perf_counter()
        try:  # timed alone: generation (or scoring) of every utterance, unparsed answers only counted
            predict_run(llm, path, unparsed="fail", **kwargs)
        except UnparsedAnswers:
            pass
        seconds = time.perf_counter() - started
        # then the unparsed answers are resolved by label scoring (from the partial file), for macro-F1
        summary = predict_run(llm, path, unparsed="score", **kwargs)
        predicted = read_predictions(path)
        s = scores([gold[i] for i in gold], [predicted[i].label for i in gold])
        result[backend] = {
            "utterances_per_second": len(gold) / seconds, "seconds": seconds, "n": summary.total,
            "invalid_answers": len(summary.unparsed), "invalid_rate": summary.unparsed_rate,
            "macro_f1": s["macro_f1"], "weighted_f1": s["weighted_f1"],
        }
        print(name, backend, json.dumps(result[backend]))
    result["score_speedup"] = result["score"]["utterances_per_second"] / result["generate"]["utterances_per_second"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="first N dev utterances (0 = all 1,084)")
    parser.add_argument("--adapter", help="a LoRA adapter for gemma (e.g. runs/bench_gemma/model/best)")
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--out", default="runs/bench_predict")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dialogues = dev_utterances(args.limit)
    results = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "utterances": sum(len(d) for d in dialogues), "window": args.window, "adapter": args.adapter,
        "tiny": run("tiny", str(tiny_model(out / "tiny-model")), None, "plain", dialogues, args.window, out),
        "gemma-3-270m": run("gemma", "packaged:gemma-3-270m", args.adapter, "plain", dialogues, args.window, out),
    }
    write_text_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
