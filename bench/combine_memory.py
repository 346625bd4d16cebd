"""Peak memory of `erckit combine` on a large synthetic test file, against the sizes of its inputs.

    .venv/bin/python bench/combine_memory.py [--utterances 200000] [--format m3ed|jsonl|csv] [--work DIR]

Writes a raw dialogue file of that many utterances (10 per dialogue, unlabelled, Chinese text of 10-40
characters) and its predictions.jsonl (a label and 7 probabilities per line, as `erckit predict` writes
them) into --work (default: a temporary folder), then runs `erckit combine` in a child process (the erckit
on PYTHONPATH: set it to compare two versions) that reports its resident memory after the imports and its
peak (VmRSS and VmHWM of /proc/self/status: the child's own, not the forking parent's), and what combine
adds over the imports as a multiple of the two files' size. Linux only.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LABELS = ("Neutral", "Happy", "Sad", "Anger", "Surprise", "Fear", "Disgust")
PER_DIALOGUE = 10


def utterances(count: int, seed: int = 0):
    """(dialogue id, utterance id, speaker, text) of `count` utterances."""
    rng = random.Random(seed)
    for index in range(count):
        dialogue = f"show_{index // PER_DIALOGUE}"
        text = "".join(chr(0x4E00 + rng.randrange(2000)) for _ in range(rng.randrange(10, 41)))
        yield dialogue, f"{dialogue}_{index % PER_DIALOGUE + 1}", "AB"[index % 2], text


def write_raw(path: Path, count: int, fmt: str) -> None:
    rows = list(utterances(count))
    if fmt == "m3ed":
        shows: dict = {"Show": {}}
        for dialogue, utt_id, speaker, text in rows:
            shows["Show"].setdefault(dialogue, {"SpeakerInfo": {}, "Dialog": {}})["Dialog"][utt_id] = {
                "Speaker": speaker, "Text": text, "StartTime": "00:00:01.000", "EndTime": "00:00:01.900"}
        path.write_text(json.dumps(shows, ensure_ascii=False, indent=2), encoding="utf-8")
    elif fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as handle:
            for start in range(0, count, PER_DIALOGUE):
                part = rows[start : start + PER_DIALOGUE]
                record = {"id": part[0][0], "utterances": [{"id": u, "speaker": s, "text": t} for _, u, s, t in part]}
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n")
            for number, (dialogue, utt_id, speaker, text) in enumerate(rows, start=1):
                handle.write(f"{number},{text},{speaker},,,{dialogue.split('_')[1]},{utt_id.rsplit('_', 1)[1]}\n")


def write_predictions(path: Path, raw: Path, fmt: str) -> None:
    """One prediction per utterance id of the raw file (read with erckit, as combine pairs them)."""
    from erckit.data import iter_utterances
    from erckit.formats import read_dialogues

    rng = random.Random(1)
    with open(path, "w", encoding="utf-8") as handle:
        for utterance in iter_utterances(read_dialogues(raw, fmt)):
            weights = [rng.random() for _ in LABELS]
            probs = {label: round(w / sum(weights), 6) for label, w in zip(LABELS, weights)}
            label = max(probs, key=probs.get)
            handle.write(json.dumps({"id": utterance.id, "label": label, "probs": probs}) + "\n")


CHILD = """
import json, sys
from erckit.cli import main
import erckit.combine, erckit.formats, erckit.predictions  # combine's imports, before the first reading

def kib(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))

before = kib("VmRSS")
code = main(sys.argv[1:])
print(json.dumps({"code": code, "imports_kib": before, "peak_kib": kib("VmHWM")}))
"""


def measure(command: list[str]) -> dict:
    """The child's resident KiB after its imports and at its peak, and its seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *command], capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["code"]:
        sys.exit(f"erckit {' '.join(command)} failed: {done.stderr}")
    return result | {"seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=200_000)
    parser.add_argument("--format", choices=("m3ed", "jsonl", "csv"), default="m3ed")
    parser.add_argument("--work", type=Path, help="folder for the files (default: a temporary one)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="combine-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    raw, predictions, out = work / f"test.{args.format}", work / "predictions.jsonl", work / f"labelled.{args.format}"
    write_raw(raw, args.utterances, args.format)
    write_predictions(predictions, raw, args.format)
    result = measure(["combine", "--predictions", str(predictions), "--raw", str(raw), "--out", str(out),
                      "--format", args.format])
    inputs = (raw.stat().st_size + predictions.stat().st_size) / 2**20
    added = (result["peak_kib"] - result["imports_kib"]) / 1024
    print(json.dumps({
        "utterances": args.utterances, "format": args.format, "raw_mib": round(raw.stat().st_size / 2**20, 1),
        "predictions_mib": round(predictions.stat().st_size / 2**20, 1),
        "rss_after_imports_mib": round(result["imports_kib"] / 1024, 1),
        "peak_rss_mib": round(result["peak_kib"] / 1024, 1), "added_mib": round(added, 1),
        "added_over_inputs": round(added / inputs, 2), "added_over_raw": round(added * 2**20 / raw.stat().st_size, 2),
        "seconds": round(result["seconds"], 1), "output": str(out),
    }, indent=1))


if __name__ == "__main__":
    main()
