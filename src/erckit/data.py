"""The dialogue data model and the error every reader raises for bad input."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input: the message names the file, the record and the problem, on one line."""

    def __init__(self, path: str | Path, record: str | None, problem: str) -> None:
        where = f"{path}: {record}: " if record else f"{path}: "
        super().__init__(where + problem)


def not_text(record: dict, key: str) -> str:
    """Why `record[key]` is no text, for a DataError: missing, not a string, or blank."""
    if key not in record or record[key] is None:
        return f'has no "{key}"'
    if not isinstance(record[key], str):
        return f'"{key}" is {type(record[key]).__name__} {record[key]!r:.40}, not text'
    return f'"{key}" is blank'


def required_text(record: dict, key: str, path: str | Path, where: str) -> str:
    """`record[key]` with its ends stripped: text (an `id` or a `speaker` may also be a whole number, as
    converted datasets number them; a text never); refused naming why when missing, of another type or blank.
    How every reader of records (JSON lines, the server, the Python API) takes ids, speakers and texts."""
    value = record.get(key)
    kinds = str | int if key in ("id", "speaker") else str
    if not isinstance(value, kinds) or isinstance(value, bool) or not str(value).strip():
        raise DataError(path, where, not_text(record, key))
    return str(value).strip()


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, with what the interrupted command kept and how to go on (the command line prints it)."""


@dataclass(frozen=True)
class Utterance:
    """One utterance: a unique id, who said it, what was said, and the gold label if known."""

    id: str
    speaker: str
    text: str
    label: str | None = None


def turn_utterance(turn: Mapping[str, Any], default_id: str, source: str | Path, where: str) -> Utterance:
    """A turn given as {"speaker", "text", "id" (optional: `default_id`)} as an Utterance, each field taken by
    `required_text`: how the server and the Python API take a turn."""
    fields = {"id": default_id} | dict(turn)
    return Utterance(*(required_text(fields, key, source, where) for key in ("id", "speaker", "text")))


@dataclass(frozen=True)
class Dialogue:
    """An ordered list of utterances."""

    id: str
    utterances: tuple[Utterance, ...]
    meta: dict = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.utterances)


def prefixes(dialogue: Dialogue) -> list[Dialogue]:
    """Each prefix of a dialogue (turns 1..k, k = 1..n) as a dialogue of its own, as a live conversation
    arrives; ids get `@k` so they stay unique across the prefixes."""
    return [replace(dialogue, id=f"{dialogue.id}@{k}", utterances=tuple(
        replace(u, id=f"{u.id}@{k}") for u in dialogue.utterances[:k])) for k in range(1, len(dialogue) + 1)]


def iter_utterances(dialogues: Iterable[Dialogue]) -> Iterator[Utterance]:
    """All utterances of all dialogues, in order."""
    for dialogue in dialogues:
        yield from dialogue.utterances


def dialogue_groups(dialogues: Iterable[Dialogue]) -> list[str]:
    """Each utterance's dialogue, in file order: the unit that cross-fitting and bootstraps resample. Its id,
    made unique when two dialogues share one (two shows of an M3ED file may): they stay two dialogues."""
    seen: dict[str, int] = {}
    groups = []
    for dialogue in dialogues:
        seen[dialogue.id] = count = seen.get(dialogue.id, 0) + 1
        groups += [dialogue.id if count == 1 else f"{dialogue.id}\0{count}"] * len(dialogue.utterances)
    return groups


def gold_labels(dialogues: Iterable[Dialogue], path: str | Path, *, skip_unlabelled: bool = False,
                hint: str = "") -> dict[str, str]:
    """Utterance id -> gold label; refuses a file with an unlabelled utterance (`hint` added to the refusal;
    `skip_unlabelled`: they are left out) and says so when none is labelled."""
    utterances = list(iter_utterances(dialogues))
    if utterances and all(utt.label is None for utt in utterances):
        raise DataError(path, None, "holds no labels: a labelled file is needed here (the Emotion column of a CSV, "
                                    "EmoAnnotation.final_main_emo in M3ED JSON, label in JSON lines)")
    gold: dict[str, str] = {}
    for utt in utterances:
        if utt.label is None and skip_unlabelled:
            continue
        if utt.label is None:
            raise DataError(path, f"utterance {utt.id}", f"has no gold label{hint}")
        gold[utt.id] = utt.label
    return gold


def check_dialogues(dialogues: list[Dialogue], path: str | Path) -> list[Dialogue]:
    """Refuse empty dialogues, utterances without text or speaker and duplicate utterance ids."""
    seen: set[str] = set()
    for dialogue in dialogues:
        if not dialogue.utterances:
            raise DataError(path, f"dialogue {dialogue.id}", "is empty")
        for utt in dialogue.utterances:
            if not all(isinstance(value, str) for value in (utt.id, utt.speaker, utt.text)):
                raise DataError(path, f"utterance {utt.id}", "id, speaker and text must be text")
            if utt.id in seen:
                raise DataError(path, f"utterance {utt.id}", "duplicate utterance id")
            seen.add(utt.id)
            if not utt.text.strip():
                raise DataError(path, f"utterance {utt.id}", "has no text")
            if not utt.speaker.strip():
                raise DataError(path, f"utterance {utt.id}", "has no speaker")
    if not dialogues:
        raise DataError(path, None, "holds no dialogues")
    return dialogues


def speaker_letters(dialogue: Dialogue) -> dict[str, str]:
    """Speaker -> A, B, C… in order of first appearance; letters already used as names are kept."""
    speakers = list(dict.fromkeys(u.speaker for u in dialogue.utterances))
    if all(len(s) == 1 and s.isupper() for s in speakers):
        return {s: s for s in speakers}
    return {s: _letter(i) for i, s in enumerate(speakers)}


def _letter(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA, …"""
    name = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        name = chr(ord("A") + rest) + name
    return name


def first_utterances(dialogues: list[Dialogue], limit: int) -> list[Dialogue]:
    """The first `limit` utterances (0 = all), as whole dialogues with the last one trimmed."""
    out, left = [], limit or sum(len(d) for d in dialogues)
    for dialogue in dialogues:
        if left <= 0:
            break
        out.append(dialogue if len(dialogue) <= left else Dialogue(dialogue.id, dialogue.utterances[:left]))
        left -= len(out[-1])
    return out
