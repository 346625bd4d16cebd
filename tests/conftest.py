"""Shared fixtures: the real data in ../shared/data (read in place) and small files built in tmp_path."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tests use tiny models: one thread is faster for them and immune to a busy second core.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
BMELD = SHARED_DATA / "bmeld"
MELD = SHARED_DATA / "meld"
SAMPLE = REPO / "examples" / "sample"
# the shipped recipes name no data: the sample's splits as overrides
SAMPLE_DATA = [f"data.{split}={SAMPLE / f'annotation_{split}.json'}" for split in ("train", "validation")]
DATA_REASON = f"needs the real data in {SHARED_DATA} (bmeld/, meld/), absent here"
REQUIRE_DATA = "ERCKIT_REQUIRE_DATA"  # CI sets it to 1: a data test that cannot run fails instead of skipping


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"needs_data: reads the real datasets in {SHARED_DATA}")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a needs_data test with one line saying where the data would be, or fail it under CI."""
    if item.get_closest_marker("needs_data") and not (BMELD.is_dir() and MELD.is_dir()):
        if os.environ.get(REQUIRE_DATA) == "1":
            pytest.fail(f"{DATA_REASON}, and {REQUIRE_DATA}=1 forbids skipping it", pytrace=False)
        pytest.skip(DATA_REASON)

# The reference pipeline's example dialogue: first, second and tenth utterances are the reference pipeline's; the rest ours.
REFERENCE_DIALOGUE = [
    ("A", "你笑什么？我在问你话呢"),
    ("B", "义乌的"),
    ("A", "义乌的怎么了"),
    ("B", "没什么，就是觉得好玩"),
    ("A", "你是不是又被人骗了"),
    ("B", "没有，这次是真的"),
    ("A", "上次你也这么说"),
    ("B", "这次不一样，人家有营业执照"),
    ("A", "营业执照也可以是假的"),
    ("A", "好，你这，这个有可能是没有骗的"),
    ("B", "那我明天再去问问"),
]


def m3ed_file(path: Path, dialogues: dict[str, list[tuple[str, str, str | None]]], show: str = "Show") -> Path:
    """Write an annotation_*.json with dialogues of (speaker, text, label-or-None) utterances."""
    data: dict = {show: {}}
    for dialogue_id, utterances in dialogues.items():
        dialog = {}
        for i, (speaker, text, label) in enumerate(utterances, start=1):
            record = {"Speaker": speaker, "Text": text, "StartTime": f"00:00:{i:02d}.000", "EndTime": f"00:00:{i:02d}.900"}
            if label is not None:
                record["EmoAnnotation"] = {"EmoAnnotator1": label, "final_mul_emo": label, "final_main_emo": label}
            dialog[f"{dialogue_id}_{i}"] = record
        data[show][dialogue_id] = {"SpeakerInfo": {}, "Dialog": dialog}
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


@pytest.fixture
def reference_file(tmp_path: Path) -> Path:
    labels = ["Happy", "Neutral", "Surprise", "Happy", "Anger", "Neutral", "Disgust", "Neutral", "Fear", "Sad", "Neutral"]
    utterances = [(s, t, l) for (s, t), l in zip(REFERENCE_DIALOGUE, labels)]
    return m3ed_file(tmp_path / "annotation_train.json", {"Yiwu_1": utterances, "Yiwu_2": utterances[:4]}, "Yiwu")
