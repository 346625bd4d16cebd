"""`erckit compare` writes only inside its `out`, never over one of its inputs, and its comparison.* whole."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import SAMPLE
from erckit.cli import main

TRAIN, VALIDATION = SAMPLE / "annotation_train.json", SAMPLE / "annotation_validation.json"


def write_config(tmp: Path, methods: dict, **paths) -> Path:
    config = {"out": str(tmp / "out"), "train": str(TRAIN), "validation": str(VALIDATION), **paths, "methods": methods}
    path = tmp / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(capsys, *words: str) -> None:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(word in err for word in words), err


@pytest.mark.parametrize("name", ["../../x", "/tmp/erckit-abs", "a/b", "..", ".hidden", "a\\b", "", "comparison.md", 7])
def test_a_hostile_method_name_is_refused_before_anything_is_written(name, tmp_path, capsys):
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    before = files(tmp_path)
    path = write_config(work, {name: {"recipe": "tfidf"}})
    assert main(["compare", "--config", str(path)]) == 2
    one_line(capsys, f"method name {str(name)!r}")
    assert files(tmp_path) == before | {str(path.relative_to(tmp_path)): path.read_bytes()}
    assert not os.path.lexists("/tmp/erckit-abs")


def test_a_method_folder_linked_outside_out_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "tfidf").symlink_to(tmp_path / "elsewhere")
    path = write_config(tmp_path, {"tfidf": {"recipe": "tfidf"}})
    assert main(["compare", "--config", str(path)]) == 2
    one_line(capsys, "leads outside")
    assert not any((tmp_path / "elsewhere").iterdir())


def collide(tmp: Path, where: str) -> tuple[Path, dict, dict]:
    """A comparison with one input placed where it would write: (the input, its methods, its paths)."""
    out = tmp / "out"
    if where == "validation":  # the method's predictions on validation
        target = out / "tfidf" / "predictions_validation.jsonl"
        return target, {"tfidf": {"recipe": "tfidf"}}, {"validation": str(target)}
    if where == "train":
        target = out / "comparison.json"
        return target, {"tfidf": {"recipe": "tfidf"}}, {"train": str(target)}
    if where == "recipe":  # a recipe file inside another method's model folder
        target = out / "b" / "model" / "erckit_model.json"
        return target, {"a": {"recipe": str(target)}, "b": {"recipe": "tfidf"}}, {}
    if where == "test":
        target = out / "tfidf" / "result.json"
        return target, {"tfidf": {"recipe": "tfidf"}}, {"test": str(target)}
    # a given model folder where another method trains
    target = out / "b" / "model" / "erckit_model.json"
    return target, {"a": {"model": str(target.parent)}, "b": {"recipe": "tfidf"}}, {}


@pytest.mark.parametrize("where", ["validation", "train", "recipe", "test", "model"])
def test_an_output_that_is_an_input_is_refused_before_anything_runs(where, tmp_path, capsys):
    target, methods, paths = collide(tmp_path, where)
    target.parent.mkdir(parents=True)
    shutil.copyfile(_recipe() if where == "recipe" else VALIDATION, target)
    before = files(tmp_path / "out")
    assert main(["compare", "--config", str(write_config(tmp_path, methods, **paths))]) == 2
    one_line(capsys, str(target.parent if where == "model" else target))
    assert files(tmp_path / "out") == before


def _recipe() -> Path:
    from erckit.recipes import resolve

    return resolve("tfidf")


def test_a_failed_chart_leaves_the_earlier_comparison_whole(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path, {"tfidf": {"recipe": "tfidf", "overrides": ["tfidf.ngram_max=1"]}})
    assert main(["compare", "--config", str(path)]) == 0
    out = tmp_path / "out"
    before = {name: (out / name).read_bytes() for name in ("comparison.md", "comparison.json", "comparison_validation.png")}
    assert json.loads(before["comparison.json"])["tfidf"]["validation"]["n"] == 89

    def fail(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("erckit.compare.plot_comparison", fail)
    capsys.readouterr()
    assert main(["compare", "--config", str(path), "test=" + str(SAMPLE / "annotation_test.json")]) == 2
    one_line(capsys, str(out), "No space left on device")
    assert {name: (out / name).read_bytes() for name in before} == before
    assert not (out / "comparison_test.png").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".erckit-tmp")]
