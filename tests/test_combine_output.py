"""`erckit combine` writes the raw file back with the predicted labels and nothing else changed: every other
value, the encoding, a byte-order mark and the line endings are the raw file's."""

import codecs
import csv
import io
import json
import random

import pytest

from conftest import REFERENCE_DIALOGUE, SAMPLE, m3ed_file
from erckit.cli import main
from erckit.formats import read_dialogues
from erckit.labels import LABELS
from erckit.predictions import Prediction, read_predictions, write_predictions

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


def m3ed_crlf(path):
    raw = reference(path)
    raw.write_bytes(raw.read_bytes().replace(b"\n", b"\r\n"))  # written on Windows
    return raw


def jsonl_crlf(path):
    raw = jsonl(path)
    raw.write_bytes(raw.read_bytes().replace(b"\n", b"\r\n"))
    return raw


CASES = {"m3ed-reference": reference, "m3ed-sample": sample, "m3ed-crlf": m3ed_crlf, "csv-bom-crlf": csv_bom_crlf,
         "csv-gbk": csv_gbk, "jsonl": jsonl, "jsonl-crlf": jsonl_crlf}


def without_labels(raw: bytes, kind: str, encoding: str) -> object:
    """The file's content with every label left out: what combine must keep as it was."""
    text = raw.decode(encoding).removeprefix("\ufeff")
    if kind == "csv":
        rows = list(csv.reader(io.StringIO(text, newline="")))
        emotion = rows[0].index("Emotion")
        return [[cell if i != emotion else "" for i, cell in enumerate(row)] for row in rows]
    records = [json.loads(line) for line in text.split("\n") if line.strip()] if kind == "jsonl" else [json.loads(text)]
    for record in records:
        utterances = (record["utterances"] if kind == "jsonl" else
                      [u for show in record.values() for d in show.values() for u in d["Dialog"].values()])
        for utt in utterances:
            utt.pop("label", None)
            if (annotation := utt.get("EmoAnnotation")) is not None:
                annotation.pop("final_main_emo", None)
                if not annotation:
                    del utt["EmoAnnotation"]
    return records


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


@pytest.mark.parametrize("case", sorted(CASES))
def test_combine_changes_the_labels_and_nothing_else(case, tmp_path):
    raw = CASES[case](tmp_path)
    out = tmp_path / f"out{raw.suffix}"
    preds = predictions_of(raw, tmp_path / "p.jsonl")
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 0
    before, after = raw.read_bytes(), out.read_bytes()
    kind, encoding = case.split("-")[0], "gbk" if case == "csv-gbk" else "utf-8"
    predicted = {p.id: p.label for p in read_predictions(preds).values()}
    assert {u.id: u.label for d in read_dialogues(out) for u in d.utterances} == predicted
    assert without_labels(after, kind, encoding) == without_labels(before, kind, encoding)
    assert after.startswith(codecs.BOM_UTF8) == before.startswith(codecs.BOM_UTF8)
    windows = before[: before.index(b"\n")].endswith(b"\r")  # the raw file's line ending, kept
    assert after.count(b"\n") == after.count(b"\r\n") if windows else b"\r\n" not in after
