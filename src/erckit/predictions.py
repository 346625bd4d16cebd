"""The one contract between the paths: predictions.jsonl, one line per utterance, keyed by id.

    {"id": "...", "label": "Happy", "probs": {"Disgust": 0.01, ...}?, "raw": "model answer"?,
     "uncalibrated": "Neutral"?}

`uncalibrated` is written only where a model's calibration (`erckit calibrate`) moved the label: it is the
label the probabilities alone give (their argmax). Files without it are read as before.

Also reads LLaMA-Factory's generated_predictions.jsonl (rows in dataset order) with the prepared
data file that recovers the utterance ids.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from erckit.atomic import write_text_atomic
from erckit.data import DataError, not_text
from erckit.formats.encoding import iter_json_lines, read_json, read_text
from erckit.labels import LABELS, normalize_label, parse_answer, read_label
from erckit.progress import bar


@dataclass(frozen=True)
class Prediction:
    """A predicted label for one utterance, with label probabilities or the raw answer when known;
    `uncalibrated` is the label calibration moved it from (None when it moved nothing)."""

    id: str
    label: str
    probs: dict[str, float] | None = None
    raw: str | None = None
    uncalibrated: str | None = None

    def to_json(self) -> str:
        fields_set = ((f.name, getattr(self, f.name)) for f in fields(self))  # not asdict: it deep-copies probs
        return json.dumps({k: v for k, v in fields_set if v is not None}, ensure_ascii=False)


def prediction_from_record(record: object, path: str | Path, where: str) -> Prediction:
    """Validate one decoded JSON line of predictions.jsonl."""
    if not isinstance(record, dict):
        raise DataError(path, where, "expected a JSON object")
    utt_id, raw_label = record.get("id"), record.get("label")
    if not isinstance(utt_id, str) or not utt_id:
        raise DataError(path, where, not_text(record, "id"))
    label = read_label(raw_label, path, f"{where} (id {utt_id})")
    if label is None:
        raise DataError(path, f"{where} (id {utt_id})", not_text(record, "label"))
    probs, raw = record.get("probs"), record.get("raw")
    if probs is not None:
        probs = check_probs(probs, path, f"{where} (id {utt_id})")
    if raw is not None and not isinstance(raw, str):
        raise DataError(path, f"{where} (id {utt_id})", '"raw" must be a string')
    moved = record.get("uncalibrated")
    if moved is not None:
        moved = normalize_label(moved) if isinstance(moved, str) else None
        if moved is None or moved == label:
            raise DataError(path, f"{where} (id {utt_id})", f'"uncalibrated" is {json.dumps(record["uncalibrated"])}: '
                            f"expected the label calibration moved this one from, one of {', '.join(LABELS)} "
                            f"other than {label}")
    return Prediction(utt_id, label, probs, raw, moved)


PROBS_DECIMALS = 6  # how predictions.jsonl writes probabilities (`from_probabilities`)
PROBS_SUM_TOLERANCE = 0.01  # probabilities written with 2 decimals still pass; all zeros do not


def check_probs(probs: object, path: str | Path, where: str) -> dict[str, float]:
    """A "probs" object: a probability in [0, 1] for each of the 7 labels, no other keys, summing to 1
    (within PROBS_SUM_TOLERANCE)."""
    if not isinstance(probs, dict):
        raise DataError(path, where, '"probs" must be an object giving a probability for each of the 7 labels')
    missing, unknown = [n for n in LABELS if n not in probs], sorted(set(probs) - set(LABELS))
    if missing or unknown:
        problem = f"lacks {', '.join(missing)}" if missing else f"has unknown label(s) {', '.join(unknown)}"
        raise DataError(path, where, f'"probs" {problem} (expected exactly: {", ".join(LABELS)})')
    for name in LABELS:
        value = probs[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1 + 1e-6:
            raise DataError(path, where, f'"probs" of {name} is {json.dumps(value)}, not a probability in [0, 1]')
    total = math.fsum(float(probs[name]) for name in LABELS)
    if abs(total - 1) > PROBS_SUM_TOLERANCE:
        raise DataError(path, where, f'"probs" sum to {total:.6g}, not 1 (± {PROBS_SUM_TOLERANCE})')
    return {name: float(probs[name]) for name in LABELS}


def read_json_lines(path: str | Path) -> Iterator[tuple[int, object]]:
    """(line number, decoded value) of a UTF-8 JSON-lines file one line at a time, blank lines skipped."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "no such file")
    return iter_json_lines(read_text(path, "utf-8-sig")[0], path)


def from_probabilities(ids: list[str], probs: np.ndarray, offsets: np.ndarray | None = None) -> list[Prediction]:
    """Predictions from [N, 7] probabilities; the label is argmax(log probs + offsets), and where the
    offsets moved it, `uncalibrated` names argmax(probs). Labels are chosen from the probabilities as written
    (6 decimals), so a file's labels follow from its own probabilities: relabelling a resumed or saved file
    (`calibrated`) gives the labels a fresh pass gives."""
    probs = np.round(np.asarray(probs, dtype=np.float64), PROBS_DECIMALS)  # float32 rounded stays 0.0789479985…
    scores = np.log(np.clip(probs, 1e-12, 1.0)) + (offsets if offsets is not None else 0.0)
    labels = np.argmax(scores, axis=1)
    plain = np.argmax(probs, axis=1)
    return [
        Prediction(utt_id, LABELS[label], {l: float(p) for l, p in zip(LABELS, row)},
                   uncalibrated=LABELS[argmax] if label != argmax else None)
        for utt_id, label, argmax, row in zip(ids, labels.tolist(), plain.tolist(), probs, strict=True)
    ]


def moved_by_calibration(predictions: Iterable[Prediction]) -> int:
    """How many labels calibration moved away from the argmax of their probabilities."""
    return sum(p.uncalibrated is not None for p in predictions)


def moved_note(count: int) -> str:
    """The summary line's words for `count` labels moved by calibration ("" for none)."""
    if not count:
        return ""
    return (f"; {count} label{'s' if count != 1 else ''} moved by the model's calibration "
            '(each marked "uncalibrated": the label its probabilities alone give)')


def iter_predictions(path: str | Path) -> Iterator[Prediction]:
    """The predictions of predictions.jsonl one line at a time (none is kept here); refuses malformed lines,
    invalid labels, duplicate ids and a file without predictions."""
    seen: set[str] = set()
    for number, record in read_json_lines(path):
        prediction = prediction_from_record(record, path, f"line {number}")
        if prediction.id in seen:
            raise DataError(path, f"line {number}", f"duplicate id {prediction.id!r}")
        seen.add(prediction.id)
        yield prediction
    if not seen:
        raise DataError(path, None, "holds no predictions")


def read_predictions(path: str | Path) -> dict[str, Prediction]:
    """Id -> prediction (`iter_predictions`)."""
    return {prediction.id: prediction for prediction in iter_predictions(path)}


def read_labels(path: str | Path, *, progress: bool = False) -> dict[str, str]:
    """Id -> predicted label (`iter_predictions`; probabilities and raw answers are not kept)."""
    labels: dict[str, str] = {}
    with bar(None, f"reading {Path(path).name}", show=progress) as shown:
        for prediction in iter_predictions(path):
            labels[prediction.id] = prediction.label
            shown.update()
    return labels


def read_confidence(path: str | Path, *, progress: bool = False) -> tuple[dict[str, str], dict[str, float]]:
    """Id -> predicted label, and id -> that label's probability to 4 places (`iter_predictions`); a prediction
    without probabilities (a generated answer) is refused."""
    labels: dict[str, str] = {}
    confidence: dict[str, float] = {}
    with bar(None, f"reading {Path(path).name}", show=progress) as shown:
        for prediction in iter_predictions(path):
            if prediction.probs is None:
                raise DataError(path, f"id {prediction.id}", "has no probabilities, so no confidence to write (a "
                                                             "generated answer?): drop --confidence")
            labels[prediction.id] = prediction.label
            confidence[prediction.id] = round(prediction.probs[prediction.label], 4)
            shown.update()
    return labels, confidence


def write_predictions(path: str | Path, predictions: list[Prediction]) -> None:
    """Write predictions.jsonl atomically."""
    write_text_atomic(path, "".join(p.to_json() + "\n" for p in predictions))


def calibrated(predictions: list[Prediction], offsets: Mapping[str, float]) -> list[Prediction]:
    """Labels re-chosen as argmax(log probs + offsets) (`erckit calibrate`); probabilities and raw answers kept."""
    probs = np.array([[prediction.probs[label] for label in LABELS] for prediction in predictions], dtype=float)
    relabelled = from_probabilities([p.id for p in predictions], probs, np.array([offsets[l] for l in LABELS]))
    return [replace(p, label=r.label, uncalibrated=r.uncalibrated) for p, r in zip(predictions, relabelled, strict=True)]


def write_llamafactory(path: str | Path, prompts: list[str], golds: list[str], predictions: list[Prediction]) -> None:
    """LLaMA-Factory's generated_predictions.jsonl (prompt, predict, label), rows in input order.

    `predict` is the raw answer when it names the predicted label, else the label word, so
    `read_llamafactory` reads back the same labels.
    """
    rows = []
    for prompt, gold, prediction in zip(prompts, golds, predictions, strict=True):
        raw = prediction.raw
        answer = raw if raw is not None and parse_answer(raw) == prediction.label else prediction.label
        rows.append(json.dumps({"prompt": prompt, "predict": answer, "label": gold}, ensure_ascii=False) + "\n")
    write_text_atomic(path, "".join(rows))


def read_llamafactory(generated: str | Path, prepared: str | Path) -> dict[str, Prediction]:
    """LLaMA-Factory's generated_predictions.jsonl, ids recovered from the prepared data file.

    The rows are in dataset order; the row count must match, and each row is checked against its
    prepared record: by its prompt (which must contain the instruction) or, without one, by its
    `label` (which must be the record's answer). A row that can be checked neither way is refused.
    """
    generated, prepared = Path(generated), Path(prepared)
    records = read_prepared(prepared)
    rows = list(read_json_lines(generated))
    if len(rows) != len(records):
        raise DataError(generated, None, f"has {len(rows)} rows but {prepared.name} has {len(records)} records")
    out: dict[str, Prediction] = {}
    for (number, row), record in zip(rows, records, strict=True):
        if not isinstance(row, dict) or not isinstance(row.get("predict"), str):
            raise DataError(generated, f"line {number}", 'expected an object with a "predict" string')
        check_row(row, record, generated, f"line {number}", prepared)
        label = parse_answer(row["predict"])
        if label is None:
            raise DataError(generated, f"line {number} (id {record['id']})", f"answer {row['predict']!r} names no valid label")
        out[record["id"]] = Prediction(record["id"], label, raw=row["predict"])
    return out


def check_row(row: dict, record: dict, path: Path, where: str, prepared: Path) -> None:
    """Refuse a generated_predictions.jsonl row that is not the prediction of `record` (rows are matched by position)."""
    prompt, label, answer = row.get("prompt"), row.get("label"), record.get("output")
    if isinstance(prompt, str):
        if record["instruction"] not in prompt:
            raise DataError(path, where, f"prompt does not match record {record['id']} of {prepared}")
    elif isinstance(label, str) and label.strip() and isinstance(answer, str) and answer.strip():
        if label.strip() != answer.strip():
            raise DataError(path, where, f"label {label!r} is not the answer {answer!r} of record {record['id']} of "
                            f"{prepared}: the rows are in another order")
    else:
        raise DataError(path, where, f'has no "prompt" (and no "label" to compare with the answers of {prepared}): '
                        "its row cannot be checked against its record; keep LLaMA-Factory's prompt column")


def read_prepared(path: str | Path) -> list[dict]:
    """The records of a prepared alpaca file (`erckit prepare` output): a non-empty list, each record
    with a unique id and an instruction."""
    path = Path(path)
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(path, None, "expected a JSON list of alpaca records")
    seen: set[str] = set()
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict) or not isinstance(record.get("instruction"), str):
            raise DataError(path, f"record {number}", 'expected an object with an "instruction" string')
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise DataError(path, f"record {number}", 'has no "id" (prepare the data with erckit prepare)')
        if record["id"] in seen:
            raise DataError(path, f"record {number}", f"duplicate id {record['id']!r}")
        seen.add(record["id"])
    if not records:
        raise DataError(path, None, "holds nothing to predict")
    return records


def check_ids(
    predicted: AbstractSet[str], expected: list[str], predictions_path: str | Path, source_path: str | Path
) -> None:
    """Refuse predictions that miss an utterance of the source file (raw or gold) or name one it does not have."""
    missing = [i for i in expected if i not in predicted]
    if missing:
        shown = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
        raise DataError(predictions_path, None, f"{len(missing)} utterance id(s) of {source_path} have no prediction: {shown}")
    extra = sorted(predicted - set(expected))
    if extra:
        shown = ", ".join(extra[:3]) + (" …" if len(extra) > 3 else "")
        raise DataError(predictions_path, None, f"{len(extra)} predicted id(s) are not in {source_path}: {shown}")
