"""What `erckit predict` answers: one item per utterance (id, prompt text, gold answer), from a prepared
alpaca file or from dialogues, checked before anything is loaded."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from erckit.data import DataError, Dialogue
from erckit.predictions import read_prepared
from erckit.prompts import PromptConfig, detect_language, emotion_examples


@dataclass(frozen=True)
class Item:
    """One prompt to answer: the utterance id, the instruction prompt, the gold answer ('' if unknown)."""

    id: str
    prompt: str
    gold: str = ""


def alpaca_prompt(record: dict) -> str:
    """The prompt of an alpaca record: instruction, then input on a new line when there is one."""
    return record["instruction"] + ("\n" + record["input"] if record.get("input") else "")


def items_from_prepared(path: str | Path) -> list[Item]:
    """Items of a prepared alpaca file (`erckit prepare` output), in file order."""
    records = read_prepared(path)
    return check_items([Item(r["id"], alpaca_prompt(r), str(r.get("output") or "")) for r in records], path)


def items_from_dialogues(dialogues: list[Dialogue], config: PromptConfig | None = None, *,
                         last_only: bool = False) -> list[Item]:
    """One item per utterance (`last_only`: per dialogue, its last), prompts built by `prompts.emotion_examples`
    (in the dialogue form, the text of the utterance's separate sequence); language detected when no config."""
    config = config or PromptConfig(language=detect_language(dialogues))
    examples = emotion_examples(dialogues, config, last_only=last_only)
    return check_items([Item(e.id, e.prompt, e.answer) for e in examples], "dialogues")


def check_items(items: list[Item], source: str | Path) -> list[Item]:
    """Refuse no items and duplicate ids."""
    if not items:
        raise DataError(source, None, "holds nothing to predict")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(source, f"id {item.id}", "duplicate id")
        seen.add(item.id)
    return items


def inputs_digest(items: Sequence[Item]) -> str:
    """A fingerprint of the ids and prompts, so a partial file is resumed only for the same inputs."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.prompt], ensure_ascii=False).encode())
    return digest.hexdigest()
