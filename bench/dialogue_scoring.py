"""Label-scoring throughput, window form vs dialogue form, on the same model and the same utterances.

    .venv/bin/python bench/dialogue_scoring.py [--model packaged:gemma-3-270m] [--limit 200] [--window 10]

Scores the first N BMELD dev utterances (whole dialogues, the last trimmed) with both forms, one after
the other in one process, and prints utterances per second of each and their ratio (JSON). The window
form is `label_log_probs` over one prompt per utterance (batch 8, as `erckit predict`); the dialogue form
packs whole dialogues (`dialogue_log_probs`, rows of up to 2,048 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

from erckit.data import first_utterances
from erckit.formats import read_dialogues
from erckit.llm.chat import get_template
from erckit.llm.engines import TransformersEngine, score_dialogues
from erckit.llm.loading import load_model
from erckit.prompts import PromptConfig

BMELD = Path(os.environ.get("BMELD") or Path(__file__).resolve().parents[1].parent / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="packaged:gemma-3-270m")
    parser.add_argument("--template", default="plain")
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--window", type=int, default=10)
    args = parser.parse_args()
    dialogues = first_utterances(read_dialogues(BMELD / "dev_sent_emo.csv"), args.limit)
    model, tokenizer = load_model(args.model)
    template = get_template(args.template)
    count = sum(len(d) for d in dialogues)
    result = {"date": date.today().isoformat(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
              "model": args.model, "utterances": count}
    labels = {}
    for form in ("window", "dialogue"):
        prompts = PromptConfig(language="zh", window=args.window, form=form)
        started = time.perf_counter()
        engine = TransformersEngine("score", model, tokenizer, template, max_length=None, pack_tokens=2048)
        logp = score_dialogues(engine, dialogues, prompts, batch_size=8)
        seconds = time.perf_counter() - started
        labels[form] = logp.argmax(axis=1)
        result[form] = {"seconds": round(seconds, 1), "utterances_per_second": round(count / seconds, 2)}
    result["speedup"] = round(result["dialogue"]["utterances_per_second"] / result["window"]["utterances_per_second"], 2)
    result["same_label_share"] = round(float((labels["window"] == labels["dialogue"]).mean()), 3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
