"""erckit's own JSON-lines format: one dialogue per line.

    {"id": "d1", "utterances": [{"id": "d1_u1", "speaker": "Ann", "text": "...", "label": "Happy"}, ...]}

`label` is optional; other keys are kept when labels are written back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from erckit.data import DataError, Dialogue, Utterance, required_text
from erckit.formats.encoding import iter_json_lines
from erckit.labels import read_gold_label


def _records(text: str, path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, dialogue record) one line at a time."""
    for number, record in iter_json_lines(text, path, "dialogue"):
        if not isinstance(record, dict) or not isinstance(record.get("utterances"), list):
            raise DataError(path, f"line {number}", 'expected an object with an "utterances" list')
        yield number, record


def parse(text: str, path: str | Path) -> list[Dialogue]:
    """Dialogues of a JSON-lines file."""
    dialogues = []
    for number, record in _records(text, path):
        dialogue_id = required_text(record, "id", path, f"line {number}")
        utterances = []
        for position, utt in enumerate(record["utterances"], start=1):
            where = f"line {number}, utterance {position}"
            if not isinstance(utt, dict):
                raise DataError(path, where, "expected an object")
            utt_id = required_text(utt, "id", path, where)
            where = f"line {number}, utterance {utt_id}"
            label = read_gold_label(utt.get("label"), path, where)
            speaker = required_text(utt, "speaker", path, where)
            utterances.append(Utterance(utt_id, speaker, required_text(utt, "text", path, where), label))
        dialogues.append(Dialogue(dialogue_id, tuple(utterances)))
    return dialogues


def write_labels(text: str, path: str | Path, labels: Mapping[str, str], out: TextIO,
                 confidence: Mapping[str, float] | None = None) -> None:
    """Write to `out` the file with each utterance's "label" set from `labels` (and its "confidence" from
    `confidence`), all else preserved, a line at a time."""
    for _, record in _records(text, path):
        for utt in record["utterances"]:
            utt_id = str(utt["id"]).strip()
            if utt_id in labels:
                utt["label"] = labels[utt_id]
            if confidence is not None and utt_id in confidence:
                utt["confidence"] = confidence[utt_id]
        out.write(json.dumps(record, ensure_ascii=False) + "\n")


def dump(dialogues: list[Dialogue]) -> str:
    """Dialogues in this format (used to convert other formats)."""
    lines = []
    for dialogue in dialogues:
        utterances = [
            {"id": u.id, "speaker": u.speaker, "text": u.text, **({"label": u.label} if u.label else {})}
            for u in dialogue.utterances
        ]
        lines.append(json.dumps({"id": dialogue.id, "utterances": utterances}, ensure_ascii=False))
    return "\n".join(lines) + "\n"
