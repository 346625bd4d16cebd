"""`erckit prepare`: raw dialogue files -> alpaca instruction data + a LLaMA-Factory dataset registry."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from erckit.atomic import atomic_files, write_text_atomic
from erckit.data import Dialogue
from erckit.formats.encoding import read_json
from erckit.prompts import Example, PromptConfig, emotion_examples, same_speaker_examples

FILE_NAMES = {"train": "data_train.json", "validation": "data_val.json", "test": "data_test.json"}
DATASET_NAMES = {"train": "erc_train", "validation": "erc_val", "test": "erc_test"}
COLUMNS = {"prompt": "instruction", "query": "input", "response": "output", "history": "history"}
INFO_NAMES = ("data_info.json", "dataset_info.json", "prepare_settings.json")
OUTPUT_NAMES = (*FILE_NAMES.values(), *INFO_NAMES)


def alpaca_record(example: Example) -> dict:
    """An alpaca record (instruction, input, output, history) that keeps the utterance id."""
    return {"id": example.id, "instruction": example.prompt, "input": "", "output": example.answer, "history": []}


def dataset_info(splits: list[str]) -> dict:
    """LLaMA-Factory's dataset_info entries; file names are relative to the folder, so it can move."""
    return {DATASET_NAMES[s]: {"file_name": FILE_NAMES[s], "columns": dict(COLUMNS)} for s in splits}


def build_split(
    dialogues: list[Dialogue], config: PromptConfig, *, same_speaker_per_dialogue: int = 0, seed: int = 0
) -> list[dict]:
    """Alpaca records for one split; the auxiliary same-speaker task is appended when asked."""
    examples = emotion_examples(dialogues, config)
    if same_speaker_per_dialogue:
        examples += same_speaker_examples(dialogues, config, same_speaker_per_dialogue, seed)
    return [alpaca_record(e) for e in examples]


def write_prepared(out: Path, records: dict[str, list[dict]], settings: dict) -> None:
    """Write data_<split>.json, data_info.json (and its copy dataset_info.json, the name LLaMA-Factory reads)
    and prepare_settings.json, all or none (`atomic_files`). The splits of an earlier prepare into `out` that
    are not written now stay, and stay registered, with the settings that made them (null where an older
    erckit did not record them per split)."""
    kept = [split for split in FILE_NAMES if split not in records and (out / FILE_NAMES[split]).is_file()]
    earlier = _split_settings(out / "prepare_settings.json")
    per_split = {split: earlier.get(split) for split in kept} | dict.fromkeys(records, settings)
    splits = [split for split in FILE_NAMES if split in per_split]  # train, validation, test
    with atomic_files(out, [*(FILE_NAMES[split] for split in records), *INFO_NAMES]) as stage:
        for split, rows in records.items():
            write_text_atomic(stage / FILE_NAMES[split], json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
        info = json.dumps(dataset_info(splits), ensure_ascii=False, indent=2) + "\n"
        write_text_atomic(stage / "data_info.json", info)
        write_text_atomic(stage / "dataset_info.json", info)
        write_text_atomic(stage / "prepare_settings.json",
                          json.dumps({s: per_split[s] for s in splits}, ensure_ascii=False, indent=2) + "\n")


def _split_settings(path: Path) -> dict:
    """Each split's settings from an earlier prepare_settings.json ({} when there is none, or it is not per split)."""
    try:
        earlier = read_json(path, "settings") if path.is_file() else {}
    except ValueError:  # unreadable: its splits' settings are unknown
        return {}
    return earlier if isinstance(earlier, dict) and set(earlier) <= set(FILE_NAMES) else {}


def prepared_prompt(path: str | Path) -> PromptConfig | None:
    """The prompt settings an `erckit prepare` data file was written with (from prepare_settings.json beside it),
    or None where they are not recorded."""
    path = Path(path)
    split = next((s for s, name in FILE_NAMES.items() if name == path.name), None)
    settings = _split_settings(path.with_name("prepare_settings.json")).get(split) if split else None
    try:
        return PromptConfig(**settings["prompt"]) if isinstance(settings, dict) else None
    except (TypeError, ValueError, KeyError):  # written by another erckit: unknown
        return None


def prepare(
    dialogues: dict[str, list[Dialogue]],
    out: Path,
    config: PromptConfig,
    *,
    same_speaker_per_dialogue: int = 0,
    seed: int = 0,
) -> dict[str, int]:
    """Build and write every split; the auxiliary task goes into the training split only."""
    records = {
        split: build_split(
            split_dialogues,
            config,
            same_speaker_per_dialogue=same_speaker_per_dialogue if split == "train" else 0,
            seed=seed,
        )
        for split, split_dialogues in dialogues.items()
    }
    settings = {"prompt": asdict(config), "same_speaker_per_dialogue": same_speaker_per_dialogue, "seed": seed}
    write_prepared(out, records, settings)
    return {split: len(rows) for split, rows in records.items()}
