import json

import pytest

from conftest import BMELD, SAMPLE
from erckit.cli import main
from erckit.data import DataError
from test_prompts import REFERENCE_PROMPT


def test_prepare_reproduces_the_reference_prompt(reference_file, tmp_path):
    out = tmp_path / "prepared"
    assert main(["prepare", "--train", str(reference_file), "--out", str(out)]) == 0
    records = json.loads((out / "data_train.json").read_text(encoding="utf-8"))
    assert records[0] == {"id": "Yiwu_1_1", "instruction": REFERENCE_PROMPT, "input": "", "output": "Happy", "history": []}
    assert len(records) == 15


@pytest.mark.needs_data
def test_data_info_loads_with_datasets_as_llamafactory_reads_it(tmp_path):
    """LLaMA-Factory joins dataset_dir with file_name and maps the columns; do the same from elsewhere."""
    from datasets import load_dataset

    out = tmp_path / "somewhere" / "prepared"
    split_files = {"train": "dev", "validation": "dev", "test": "test"}
    args = ["prepare", "--out", str(out)]
    for flag, split in split_files.items():
        args += [f"--{flag}", str(BMELD / f"{split}_sent_emo.csv")]
    assert main(args) == 0
    info = json.loads((out / "data_info.json").read_text(encoding="utf-8"))
    assert info == json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    sizes = {}
    for name, entry in info.items():
        dataset = load_dataset("json", data_files=str(out / entry["file_name"]), split="train")
        for column in entry["columns"].values():
            assert column in dataset.column_names
        sizes[name] = len(dataset)
        assert all(dataset[0][entry["columns"]["prompt"]].startswith("现在，你是一名情感和情绪分析专家") for _ in [0])
    assert sizes == {"erc_train": 1084, "erc_val": 1084, "erc_test": 2601}


def test_same_speaker_task_only_in_training_data(reference_file, tmp_path):
    out = tmp_path / "prepared"
    args = ["prepare", "--train", str(reference_file), "--validation", str(reference_file), "--out", str(out)]
    assert main(args + ["--same-speaker", "4"]) == 0
    train = json.loads((out / "data_train.json").read_text(encoding="utf-8"))
    val = json.loads((out / "data_val.json").read_text(encoding="utf-8"))
    assert len(val) == 15 and len(train) > 15
    assert {r["output"] for r in train[15:]} <= {"是", "否"}


def test_prepare_in_the_dialogue_form_writes_each_utterances_separate_sequence(reference_file, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert main(["prepare", "--train", str(reference_file), "--out", str(out), "--form", "dialogue"]) == 0
    records = json.loads((out / "data_train.json").read_text(encoding="utf-8"))
    assert len(records) == 15 and records[2]["id"] == "Yiwu_1_3" and records[2]["output"] == "Surprise"
    text = records[2]["instruction"]
    assert "\n1 A：你笑什么？我在问你话呢\n" in text and "\n11 B：那我明天再去问问\n" in text  # the whole dialogue
    assert text.endswith("\n3") and text.count("你笑什么？我在问你话呢") == 1  # asked by number, not quoted
    capsys.readouterr()
    bad = ["prepare", "--train", str(reference_file), "--out", str(tmp_path / "bad"), "--form", "dialogue",
           "--variant", "speaker"]
    assert main(bad) == 2
    assert "window form only" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_a_later_test_split_keeps_the_training_splits_registered_with_their_settings(reference_file, tmp_path):
    out = tmp_path / "prepared"
    assert main(["prepare", "--train", str(reference_file), "--validation", str(reference_file), "--out", str(out),
                 "--window", "4"]) == 0
    assert main(["prepare", "--test", str(reference_file), "--out", str(out)]) == 0  # the test file, later
    info = json.loads((out / "dataset_info.json").read_text(encoding="utf-8"))
    assert list(info) == ["erc_train", "erc_val", "erc_test"]
    assert all((out / entry["file_name"]).is_file() for entry in info.values())
    settings = json.loads((out / "prepare_settings.json").read_text(encoding="utf-8"))
    assert [settings[split]["prompt"]["window"] for split in ("train", "validation", "test")] == [4, 4, 10]


def test_a_prepared_files_prompt_settings_are_checked_against_the_runs_form_first(tmp_path):
    """The refusal names the form where the forms differ (the other settings follow from it), a setting where they
    agree; a file whose settings are not recorded beside it is not judged."""
    from erckit.llm.predict import _check_prepared_prompt
    from erckit.prompts import PromptConfig

    assert main(["prepare", "--test", str(SAMPLE / "annotation_test.json"), "--out", str(tmp_path / "d"),
                 "--form", "dialogue"]) == 0
    prepared = tmp_path / "d" / "data_test.json"
    with pytest.raises(DataError, match="was prepared with prompt form 'dialogue', and the run reads 'window'"):
        _check_prepared_prompt(prepared, PromptConfig(language="zh", window=5))
    with pytest.raises(DataError, match="prompt placement 'centered', and the run reads 'past'"):
        _check_prepared_prompt(prepared, PromptConfig(language="zh", form="dialogue", placement="past"))
    _check_prepared_prompt(prepared, PromptConfig(language="zh", form="dialogue"))  # the same settings: accepted
    moved = tmp_path / "data_test.json"
    moved.write_bytes(prepared.read_bytes())  # without prepare_settings.json: unknown, not judged
    _check_prepared_prompt(moved, PromptConfig(language="zh", window=5))
