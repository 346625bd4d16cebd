"""A fixed random subset of a MELD-style CSV's dialogues, for trainings too long for all of a split on 2 cores.

    .venv/bin/python bench/subset.py $BMELD/train_sent_emo.csv --dialogues 250 --seed 0 \
        --out runs/bmeld_subset/train_250.csv

Draws `--dialogues` of the file's Dialogue_IDs with `--seed` (the same file, count and seed give the same
subset), keeps their rows unchanged and in file order, and writes them as UTF-8 (the input may be GBK, as
BMELD's is). Prints how many dialogues and utterances were kept.
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path

from erckit.atomic import check_output, write_text_atomic
from erckit.formats.encoding import read_text


def subset_rows(text: str, dialogues: int, seed: int) -> tuple[list[str], list[list[str]], int]:
    """(header, the kept rows, the number of dialogues in the file)."""
    header, *rows = list(csv.reader(io.StringIO(text)))
    column = header.index("Dialogue_ID")
    ids = sorted({row[column] for row in rows}, key=int)
    if dialogues > len(ids):
        raise SystemExit(f"the file holds {len(ids)} dialogues, fewer than --dialogues {dialogues}")
    kept = set(random.Random(seed).sample(ids, dialogues))
    return header, [row for row in rows if row[column] in kept], len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="a MELD-style CSV (Dialogue_ID column)")
    parser.add_argument("--dialogues", type=int, required=True, help="how many dialogues to keep")
    parser.add_argument("--seed", type=int, default=0, help="the draw's seed (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="the subset CSV to write (UTF-8)")
    args = parser.parse_args()
    check_output(args.out, [args.csv])
    header, rows, total = subset_rows(read_text(args.csv)[0], args.dialogues, args.seed)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    write_text_atomic(args.out, buffer.getvalue())
    print(f"{args.out}: {args.dialogues} of {total} dialogues, {len(rows)} utterances (seed {args.seed})")


if __name__ == "__main__":
    main()
