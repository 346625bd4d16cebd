"""Tokens per BMELD training epoch for the encoder's two contexts (utterance alone vs the dialogue together).

    .venv/bin/python bench/encoder_tokens.py [key=value ...]

Counts, for the encoder recipe's batches of one epoch, the tokens the encoder reads (attention mask) and the
padded positions it computes (rows × longest row), using the same `encode_batch` as training. Overrides apply
to the recipe (e.g. encoder.max_length=64).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from transformers import AutoTokenizer

from erckit.config import load_config
from erckit.encoder.packaged import resolve_encoder
from erckit.encoder.train import _batches
from erckit.formats import read_dialogues

BMELD = Path(os.environ.get("BMELD") or Path(__file__).resolve().parents[2] / "shared" / "data" / "bmeld")  # $BMELD, else beside the repo
REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    from erckit.encoder.model import encode_batch

    dialogues = read_dialogues(BMELD / "train_sent_emo.csv")
    counts = {}
    for context in ("utterance", "dialogue"):
        config = load_config("bert_bigru", [*args.overrides, f"encoder.context={context}"])
        tokenizer = AutoTokenizer.from_pretrained(resolve_encoder(config.encoder.name))
        real = padded = rows = 0
        for batch in _batches(dialogues, config.train.batch_dialogues, config.train.seed + 1):
            inputs, _ = encode_batch(tokenizer, batch, config.encoder)
            real += int(inputs["attention_mask"].sum())
            padded += inputs["input_ids"].numel()
            rows += inputs["input_ids"].shape[0]
        counts[context] = (real, padded, rows)
        print(f"{context:>9}: {real:>9,} tokens read, {padded:>9,} padded positions, {rows:>6,} rows per epoch")
    (ur, up, _), (dr, dp, _) = counts["utterance"], counts["dialogue"]
    print(f"dialogue / utterance: {dr / ur:.2f}x tokens read, {dp / up:.2f}x padded positions")


if __name__ == "__main__":
    main()
