"""The M3ED-style annotation_*.json: {show: {dialogue: {"SpeakerInfo", "Dialog": {utt: {...}}}}}."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from erckit.data import DataError, Dialogue, Utterance, not_text
from erckit.formats.encoding import json_problem
from erckit.labels import read_gold_label

LABEL_KEY = "final_main_emo"


def _load(text: str, path: str | Path) -> dict[str, Any]:
    """Parse the JSON, refusing duplicate keys (a duplicate utterance id would vanish silently)."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data = dict(pairs)
        if len(data) != len(pairs):
            seen: set[str] = set()
            key = next(k for k, _ in pairs if k in seen or seen.add(k))
            raise DataError(path, f"key {key!r}", "duplicate key (duplicate utterance or dialogue id)")
        return data

    try:
        data = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as err:
        raise DataError(path, f"line {err.lineno} column {err.colno}", f"malformed JSON: {json_problem(err)}") from None
    if not isinstance(data, dict):
        raise DataError(path, None, "expected a JSON object {show: {dialogue: {...}}}")
    return data


def _dialogues(data: dict[str, Any], path: str | Path):
    """(dialogue id, dialogue dict) for every dialogue, checking the nesting."""
    for show, dialogues in data.items():
        if not isinstance(dialogues, dict):
            raise DataError(path, f"show {show}", "expected an object of dialogues")
        for dialogue_id, dialogue in dialogues.items():
            if not isinstance(dialogue, dict) or not isinstance(dialogue.get("Dialog"), dict):
                raise DataError(path, f"dialogue {dialogue_id}", 'expected an object with a "Dialog" object')
            yield dialogue_id, dialogue


def _label(record: dict[str, Any], path: str | Path, utt_id: str) -> str | None:
    annotation = record.get("EmoAnnotation")
    if annotation is None:
        return None
    if not isinstance(annotation, dict):
        raise DataError(path, f"utterance {utt_id}", '"EmoAnnotation" is not an object')
    return read_gold_label(annotation.get(LABEL_KEY), path, f"utterance {utt_id}")


def parse(text: str, path: str | Path) -> list[Dialogue]:
    """Dialogues of an annotation file; labels are optional (a test file may have none)."""
    out = []
    for dialogue_id, dialogue in _dialogues(_load(text, path), path):
        utterances = []
        for utt_id, record in dialogue["Dialog"].items():
            if not isinstance(record, dict):
                raise DataError(path, f"utterance {utt_id}", "expected an object")
            text_value = record.get("Text")
            if not isinstance(text_value, str) or not text_value.strip():
                raise DataError(path, f"utterance {utt_id}", not_text(record, "Text"))
            speaker = record.get("Speaker")
            if not isinstance(speaker, str) or not speaker.strip():
                raise DataError(path, f"utterance {utt_id}", not_text(record, "Speaker"))
            utterances.append(Utterance(utt_id, speaker.strip(), text_value.strip(), _label(record, path, utt_id)))
        out.append(Dialogue(dialogue_id, tuple(utterances)))
    return out


def write_labels(text: str, path: str | Path, labels: Mapping[str, str], out: TextIO,
                 confidence: Mapping[str, float] | None = None) -> None:
    """Write to `out` the file with `EmoAnnotation.final_main_emo` set from `labels` (and
    `final_main_emo_confidence` from `confidence`), all else preserved."""
    data = _load(text, path)
    for _, dialogue in _dialogues(data, path):
        for utt_id, record in dialogue["Dialog"].items():
            if utt_id in labels:
                annotation = record.get("EmoAnnotation")
                if not isinstance(annotation, dict):
                    annotation = record["EmoAnnotation"] = {}
                annotation[LABEL_KEY] = labels[utt_id]
                if confidence is not None and utt_id in confidence:
                    annotation[f"{LABEL_KEY}_confidence"] = confidence[utt_id]
    json.dump(data, out, ensure_ascii=False, indent=2)  # in pieces, never one string of the whole file
    out.write("\n")
