"""`erckit combine` writes the same bytes as it always did: the sha256 of each output was recorded with
the combine that read everything into memory (before it streamed)."""

import hashlib
import json
import random

import pytest

from conftest import REFERENCE_DIALOGUE, SAMPLE, m3ed_file
from erckit.cli import main
from erckit.formats import read_dialogues
from erckit.labels import LABELS
from erckit.predictions import Prediction, write_predictions

CSV_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID"


def reference(path):
    labels = [None, "Happy", None, "Sad", "Anger", None, "Fear", "Neutral", None, "Disgust", None]
    utterances = [(s, t, l) for (s, t), l in zip(REFERENCE_DIALOGUE, labels)]
    return m3ed_file(path / "annotation_test.json", {"Yiwu_1": utterances, "Yiwu_2": utterances[:4]}, "Yiwu")


def sample(path):
    return SAMPLE / "annotation_test.json"


def csv_bom_crlf(path):
    rows = [CSV_HEADER, '1,"two\r\nlines, quoted",A,,,0,0', '2,Hi,B,neutral,neutral,0,1', '3,"say ""no""",A,,,1,0']
    raw = path / "test.csv"
    raw.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode("utf-8") + b"\r\n")
    return raw


def csv_gbk(path):
    rows = [CSV_HEADER, *(f"{i + 1},{t},{s},,,{i // 4},{i % 4}" for i, (s, t) in enumerate(REFERENCE_DIALOGUE))]
    raw = path / "test_gbk.csv"
    raw.write_bytes(("\n".join(rows) + "\n").encode("gbk"))
    return raw


def jsonl(path):
    lines = [
        {"id": "d1", "topic": "天气", "utterances": [
            {"id": "d1_1", "speaker": "A", "text": "今天\u2028下雨", "extra": [1, 2]},
            {"id": "d1_2", "speaker": "B", "text": "是吗", "label": "Sad"}]},
        {"id": "d2", "utterances": [{"id": "d2_1", "speaker": "C", "text": "Hello \"there\"", "label": ""}]},
    ]
    raw = path / "test.jsonl"
    raw.write_text("\n".join(json.dumps(line, ensure_ascii=False) for line in lines) + "\n", encoding="utf-8")
    return raw


EXPECTED = {  # the raw file -> sha256 of combine's output
    "m3ed-reference": (reference, "9fdd42b75ed884e721c942a844c1b72ebfe96444147a08e96d68ee5333021f8f"),
    "m3ed-sample": (sample, "93aa5058dacd36f1d953e080fc27f771f000578b766781a33d0dcd3e85a8d272"),
    "csv-bom-crlf": (csv_bom_crlf, "6466a93d4f674ac06fb3a2d83afead0de788986649405a6d53a09008b30f7f39"),
    "csv-gbk": (csv_gbk, "8e112baa6c8decaacdd71dcde5e975f9e0475e9c1b2c760ffedcd60a6799970b"),
    "jsonl": (jsonl, "21a894efb4cdb18f59a59509c746e60bbdd50586b2610181c0a2e82a5e5155dc"),
}


def predictions_of(raw, path):
    """Labels cycling through the seven, probabilities on every other one, in shuffled order."""
    ids = [u.id for d in read_dialogues(raw) for u in d.utterances]
    predictions = []
    for number, utt_id in enumerate(ids):
        label = LABELS[number % len(LABELS)]
        probs = {name: 0.4 if name == label else 0.1 for name in LABELS} if number % 2 else None
        predictions.append(Prediction(utt_id, label, probs))
    random.Random(0).shuffle(predictions)
    write_predictions(path, predictions)
    return path


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_combine_output_is_unchanged(case, tmp_path):
    make, digest = EXPECTED[case]
    raw = make(tmp_path)
    out = tmp_path / f"out{raw.suffix}"
    preds = predictions_of(raw, tmp_path / "p.jsonl")
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 0
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest
