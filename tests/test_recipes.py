"""Shipped recipes by name: `erckit recipes` lists and copies them; `train --config NAME` and `--out`."""

import json

import pytest
import yaml

from conftest import SAMPLE_DATA
from erckit import recipes
from erckit.cli import main


def test_recipes_lists_every_shipped_recipe_on_one_line_each(capsys):
    assert main(["recipes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == recipes.names()
    assert any(line.startswith("tfidf ") and "TF-IDF" in line for line in lines)


def test_recipes_show_prints_a_recipe_as_shipped(capsys):
    assert main(["recipes", "show", "gemma-270m-dialogue"]) == 0
    shown = capsys.readouterr().out
    assert shown == recipes.path("gemma-270m-dialogue").read_text(encoding="utf-8")
    assert yaml.safe_load(shown)["llm"]["epochs"] == 3


def test_recipes_show_prints_a_recipe_file_too(tmp_path, capsys):
    mine = tmp_path / "mine.yaml"
    mine.write_text("model: tfidf\ntfidf:\n  c: 0.5\n", encoding="utf-8")
    assert main(["recipes", "show", str(mine)]) == 0
    assert capsys.readouterr().out == mine.read_text(encoding="utf-8")


def test_a_recipes_summary_is_a_whole_sentence(capsys):
    for name in recipes.names():
        assert recipes.summary(name).endswith((".", ")")), name


def test_recipes_cp_copies_one_out_to_edit_and_never_overwrites(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["recipes", "cp", "tfidf", "mine.yaml"]) == 0
    assert (tmp_path / "mine.yaml").read_text(encoding="utf-8") == recipes.path("tfidf").read_text(encoding="utf-8")
    (tmp_path / "folder").mkdir()
    capsys.readouterr()
    assert main(["recipes", "cp", "bert_bigru", "folder"]) == 0
    assert yaml.safe_load((tmp_path / "folder" / "bert_bigru.yaml").read_text())["model"] == "bert_bigru"
    assert "train with: erckit train --config folder/bert_bigru.yaml data.train=" in capsys.readouterr().out
    assert main(["recipes", "cp", "tfidf", "mine.yaml"]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("args, problem", [
    (["recipes", "cp", "nope", "x.yaml"], "not a shipped recipe"),
    (["recipes", "cp", "tfidf"], "needs a recipe name and a destination"),
    (["recipes", "show"], "show needs one recipe name"),
    (["recipes", "show", "nope"], "nope: no such recipe file, and not a shipped recipe"),
    (["recipes", "cp", "tfidf", "no/such/folder/x.yaml"], "no such folder"),
    (["train", "--config", "nope"], "nope: no such recipe file, and not a shipped recipe (baichuan2-13b-lora"),
    (["train", "--config", "missing/recipe.yaml"], "missing/recipe.yaml: cannot read"),
])
def test_bad_recipe_arguments_are_one_line_exit_2(tmp_path, monkeypatch, capsys, args, problem):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert problem in err and err.count("\n") == 1


def test_train_by_name_from_another_folder_with_out_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--config", "tfidf", "--out", "model", *SAMPLE_DATA]) == 0
    info = json.loads((tmp_path / "model" / "erckit_model.json").read_text())
    assert info["finished"] and info["config"]["out"] == "model"
    # a file of that name in the current folder is the recipe, not the shipped one
    (tmp_path / "tfidf").write_text("model: tfidf\ntfidf:\n  c: 0.5\n", encoding="utf-8")
    assert main(["train", "--config", "tfidf", "--out", "mine", *SAMPLE_DATA]) == 0
    assert json.loads((tmp_path / "mine" / "erckit_model.json").read_text())["config"]["tfidf"]["c"] == 0.5
    # a folder of that name (a model trained with --out tfidf) does not hide the shipped recipe
    (tmp_path / "tfidf").unlink()
    assert main(["train", "--config", "tfidf", "--out", "tfidf", *SAMPLE_DATA]) == 0
    assert main(["train", "--config", "tfidf", "--out", "again", *SAMPLE_DATA]) == 0
    assert json.loads((tmp_path / "again" / "erckit_model.json").read_text())["config"]["tfidf"]["c"] == 1.0
