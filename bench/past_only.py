"""What live labelling costs: a model's scores when each turn sees only the turns before it (past-only, as
`erckit serve`'s live mode and `Model.label_past_only` label), against the same model on whole dialogues.

    python bench/past_only.py --model runs/my_model --gold $BMELD/dev_sent_emo.csv [--out runs/past_only.json]

Prints macro-F1 and weighted-F1 of both, with 95% intervals over dialogues, and the paired difference.
`--dialogues N` reads the first N dialogues only; `--every-prefix-whole` also times labelling every turn of
every prefix (what live labelling would cost if the model could not score a last turn alone) and checks that
its last labels are the past-only ones.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from tqdm.auto import tqdm

import erckit
from erckit.atomic import write_text_atomic
from erckit.data import dialogue_groups, prefixes
from erckit.formats import read_dialogues
from erckit.intervals import bootstrap, paired_difference
from erckit.metrics import scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model folder")
    parser.add_argument("--gold", required=True, help="a labelled dialogue file")
    parser.add_argument("--out", help="also write the figures to this JSON file")
    parser.add_argument("--dialogues", type=int, help="the first N dialogues only")
    parser.add_argument("--every-prefix-whole", action="store_true",
                        help="also time labelling every turn of every prefix, the cost without last-turn scoring")
    args = parser.parse_args()
    model = erckit.load(args.model)
    dialogues = read_dialogues(args.gold)[: args.dialogues]
    gold = [u.label for d in dialogues for u in d.utterances]
    groups = dialogue_groups(dialogues)
    started = time.perf_counter()
    whole = [p.label for p in model.label(dialogues)]
    whole_seconds = time.perf_counter() - started
    started = time.perf_counter()
    past = [p.label for d in tqdm(dialogues, desc="past-only", unit="dialogue") for p in model.label_past_only(d)]
    past_seconds = time.perf_counter() - started
    result = {"model": args.model, "gold": args.gold, "utterances": len(gold)}
    for name, labels, seconds in (("whole", whole, whole_seconds), ("past_only", past, past_seconds)):
        result[name] = scores(gold, labels) | {"intervals": bootstrap(gold, labels, groups), "seconds": seconds}
        s = result[name]
        print(f"{name:>9}: macro-F1 {s['macro_f1']:.4f} ({s['intervals']['macro_f1'][0]:.3f}–"
              f"{s['intervals']['macro_f1'][1]:.3f}), weighted-F1 {s['weighted_f1']:.4f}, {seconds:.0f} s")
    if args.every_prefix_whole:
        started = time.perf_counter()
        every = [prefix for d in dialogues for prefix in prefixes(d)]
        labelled = model.predictor.predict(every)
        ends = np.cumsum([len(p) for p in every]) - 1
        seconds = time.perf_counter() - started
        same = sum(labelled[i].label == label for i, label in zip(ends, past, strict=True))
        result["every_prefix_whole"] = {"seconds": seconds, "turns_scored": len(labelled), "same_labels": same}
        print(f"every prefix whole: {len(labelled)} turns scored for {len(past)} live labels, {seconds:.0f} s "
              f"({seconds / past_seconds:.1f}x the past-only time); {same} of {len(past)} labels the same")
    result["difference"] = paired_difference(gold, whole, past, groups)
    d = result["difference"]
    print(f"whole minus past-only: {d['difference']:+.4f} macro-F1 (95% interval {d['interval'][0]:+.3f} to "
          f"{d['interval'][1]:+.3f})")
    if args.out:
        write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
