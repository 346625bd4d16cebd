"""Model kinds own their recipe keys: a key its kind never reads is refused, a run folder keeps only its
kind's sections, and the reuse check compares those and names the key that differs."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from conftest import SAMPLE
from erckit.cli import main
from erckit.config import RunConfig, to_dict
from erckit.recipes import resolve

DATA = [f"data.train={SAMPLE / 'annotation_train.json'}", f"data.validation={SAMPLE / 'annotation_validation.json'}"]

OTHER_KINDS_KEYS = [  # (recipe, override, the key named)
    ("gemma-270m-dialogue.yaml", "train.epochs=1", "train.epochs"),  # the llm kind has llm.epochs
    ("gemma-270m-dialogue.yaml", "train.lr=9", "train.lr"),
    ("gemma-270m-dialogue.yaml", "tfidf.c=3", "tfidf.c"),
    ("gemma-270m-lora.yaml", "encoder.max_length=32", "encoder.max_length"),
    ("gemma-270m-lora.yaml", "classifier.dropout=0.2", "classifier.dropout"),
    ("bert_bigru.yaml", "tfidf.c=3", "tfidf.c"),
    ("bert_bigru.yaml", "llm.epochs=2", "llm.epochs"),
    ("bert_bigru.yaml", "llm.prompt.window=4", "llm.prompt.window"),
    ("tfidf.yaml", "train.epochs=9", "train.epochs"),
    ("tfidf.yaml", "encoder.name=x", "encoder.name"),
    ("tfidf.yaml", "llm.lora.rank=8", "llm.lora.rank"),
]


@pytest.mark.parametrize(("recipe", "override", "key"), OTHER_KINDS_KEYS)
def test_a_key_of_another_kind_is_refused_naming_it_and_nothing_is_written(tmp_path, capsys, recipe, override, key):
    out = tmp_path / "run"
    assert main(["train", "--config", recipe.removesuffix(".yaml"), f"out={out}", *DATA, override]) == 2
    err = capsys.readouterr().err
    assert f"{key} is not read by model" in err and err.startswith(f"erckit train: error: {recipe.removesuffix('.yaml')}: ")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_a_recipe_file_with_another_kinds_section_is_refused(tmp_path, capsys):
    recipe = yaml.safe_load(resolve("bert_bigru").read_text()) | {"tfidf": {"ngram_max": 2}}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "recipe.yaml"), f"out={out}", *DATA]) == 2
    err = capsys.readouterr().err
    assert "recipe.yaml: tfidf.ngram_max is not read by model bert_bigru" in err and not out.exists()


def train_tfidf(out, *overrides: str) -> int:
    return main(["train", "--config", "tfidf", f"out={out}", *DATA, *overrides])


def test_a_run_folder_keeps_only_its_kinds_sections_and_the_reuse_check_names_the_key(tmp_path, capsys):
    out = tmp_path / "run"
    assert train_tfidf(out) == 0
    config = json.loads((out / "erckit_model.json").read_text())["config"]
    assert set(config) == {"model", "out", "report_to", "data", "tfidf", "train"} and config["train"] == {"seed": 0}
    capsys.readouterr()
    assert train_tfidf(out) == 0 and "already holds this finished run" in capsys.readouterr().out
    assert train_tfidf(out, "tfidf.c=2") == 2
    err = capsys.readouterr().err
    assert "holds a run of another recipe (tfidf.c differs)" in err and len(err.strip().splitlines()) == 1


def test_an_older_run_folder_with_every_section_predicts_and_is_reused(tmp_path, capsys):
    out, test = tmp_path / "run", SAMPLE / "annotation_test.json"
    assert train_tfidf(out) == 0
    assert main(["predict", "--model", str(out), "--input", str(test), "--out", str(tmp_path / "a.jsonl")]) == 0
    info = json.loads((out / "erckit_model.json").read_text())
    flat = to_dict(RunConfig(model="tfidf", out=str(out))) | {"data": info["config"]["data"]}  # every section
    flat["train"]["epochs"] = 9  # a key the kind never read: ignored
    (out / "erckit_model.json").write_text(json.dumps(info | {"config": flat}))
    assert main(["predict", "--model", str(out), "--input", str(test), "--out", str(tmp_path / "b.jsonl")]) == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    capsys.readouterr()
    assert train_tfidf(out) == 0 and "already holds this finished run" in capsys.readouterr().out


def test_a_moved_run_with_its_data_read_from_another_place_is_reused(tmp_path, capsys):
    """The run folder's place (`out`) and the data's paths are not the recipe: the data is compared by content."""
    data = tmp_path / "data"
    data.mkdir()
    for name in ("annotation_train.json", "annotation_validation.json"):
        shutil.copy(SAMPLE / name, data / name)
    assert train_tfidf(tmp_path / "run") == 0
    shutil.move(tmp_path / "run", tmp_path / "moved")
    capsys.readouterr()
    moved = [f"data.train={data / 'annotation_train.json'}", f"data.validation={data / 'annotation_validation.json'}"]
    assert main(["train", "--config", "tfidf", f"out={tmp_path / 'moved'}", *moved]) == 0
    assert "already holds this finished run" in capsys.readouterr().out
    (data / "annotation_train.json").write_text((data / "annotation_train.json").read_text().replace("Neutral", "Happy", 1))
    assert main(["train", "--config", "tfidf", f"out={tmp_path / 'moved'}", *moved]) == 2
    assert "trained on other data (the content of data.train differs, compared byte for byte" in capsys.readouterr().err


def test_validating_on_the_training_data_is_noted(tmp_path, capsys):
    train = SAMPLE / "annotation_train.json"
    copy = tmp_path / "copy.json"
    copy.write_bytes(train.read_bytes())  # the same dialogues under another name
    assert main(["train", "--config", "tfidf", f"data.train={train}", f"data.validation={copy}",
                 f"--out={tmp_path / 'same'}"]) == 0
    assert f"note: data.validation holds the same dialogues as data.train ({copy})" in capsys.readouterr().err
    assert main(["train", "--config", "tfidf", f"data.train={train}",
                 f"data.validation={SAMPLE / 'annotation_validation.json'}", f"--out={tmp_path / 'other'}"]) == 0
    assert "note:" not in capsys.readouterr().err


def test_each_kind_names_the_files_its_training_writes_and_the_checkpoint_it_resumes_from(tmp_path, capsys):
    from erckit import kinds
    from erckit.models import output_names

    assert main(["train", "--config", "tfidf", f"out={tmp_path / 'tfidf'}", *DATA]) == 0
    assert set(output_names("tfidf")) == {p.name for p in (tmp_path / "tfidf").iterdir()}  # all it writes, no more
    assert output_names("bert_bigru") == ("erckit_model.json", "model.safetensors", "training.png")
    run = tmp_path / "run"
    (run / "checkpoint").mkdir(parents=True)
    assert not any(kinds.get(name).resumable(run) for name in kinds.NAMES)  # a folder with no progress file
    (run / "checkpoint" / "trainer_state.json").write_text("{}", encoding="utf-8")  # the encoder's, after an epoch
    (run / "checkpoint-40").mkdir()  # the Hugging Face Trainer's
    assert [name for name in kinds.NAMES if kinds.get(name).resumable(run)] == ["bert_bigru", "llm"]
    # an unfinished encoder run with its checkpoint is kept: a recipe of another kind there is refused, not begun
    (run / "erckit_model.json").write_text(json.dumps({"type": "bert_bigru", "config": {}, "finished": False}))
    assert main(["train", "--config", "tfidf", f"out={run}", *DATA]) == 2
    assert "holds a run of another recipe" in capsys.readouterr().err
