"""`erckit compare` on the sample: one table, one chart, finished runs reused."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SAMPLE
from erckit.cli import main
from erckit.compare import load_compare_config


def test_shipped_compare_config_parses():
    config = load_compare_config(REPO / "configs" / "compare.yaml")
    assert {"tfidf", "bert_bigru", "lora_emotion", "lora_speaker_info", "lora_same_speaker_multitask",
            "lora_dialogue_form"} == set(config.methods)
    for method in config.methods.values():
        assert (REPO / method.recipe).is_file()
    bmeld = load_compare_config(REPO / "configs" / "compare-bmeld.yaml")
    assert set(bmeld.methods) == set(config.methods) and bmeld.validation.endswith("bmeld/dev_sent_emo.csv")


def test_compare_writes_table_and_chart_and_reuses_finished_runs(tmp_path, capsys):
    config = {
        "out": str(tmp_path / "compare"),
        "train": str(SAMPLE / "annotation_train.json"),
        "validation": str(SAMPLE / "annotation_validation.json"),
        "test": str(SAMPLE / "annotation_test.json"),
        "methods": {
            "tfidf_1gram": {"recipe": str(REPO / "configs" / "tfidf.yaml"), "overrides": ["tfidf.ngram_max=1"]},
            "tfidf_3gram": {"recipe": str(REPO / "configs" / "tfidf.yaml")},
        },
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 0
    out = tmp_path / "compare"
    table = (out / "comparison.md").read_text(encoding="utf-8")
    assert "| tfidf_1gram |" in table and "| tfidf_3gram |" in table and "## test" in table
    assert (out / "comparison_test.png").read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "comparison.json").read_text())
    assert results["tfidf_1gram"]["test"]["n"] == 96
    weights = out / "tfidf_3gram" / "model" / "tfidf.safetensors"
    before = weights.stat().st_mtime_ns
    capsys.readouterr()
    assert main(["compare", "--config", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "tfidf_1gram: reusing" in printed and "tfidf_3gram: reusing" in printed
    assert weights.stat().st_mtime_ns == before
    assert json.loads((out / "comparison.json").read_text()) == results
    # another test file: scores are recomputed (the trained models are still reused)
    other = tmp_path / "annotation_test.json"
    data = json.loads((SAMPLE / "annotation_test.json").read_text(encoding="utf-8"))
    show, dialogues = next(iter(data.items()))
    other.write_text(json.dumps({show: dict(list(dialogues.items())[:3])}, ensure_ascii=False), encoding="utf-8")
    assert main(["compare", "--config", str(path), f"test={other}"]) == 0
    printed = capsys.readouterr().out
    assert "tfidf_3gram: reusing" not in printed and "already holds this finished run" in printed
    assert weights.stat().st_mtime_ns == before
    assert json.loads((out / "comparison.json").read_text())["tfidf_3gram"]["test"]["n"] < 96


def test_a_finished_model_folder_joins_the_comparison_without_retraining(tmp_path):
    from erckit.config import load_config
    from erckit.models import train

    model = tmp_path / "trained"
    train(load_config(REPO / "configs" / "tfidf.yaml", [f"out={model}"]))
    before = (model / "tfidf.safetensors").stat().st_mtime_ns
    config = {"out": str(tmp_path / "c"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"), "methods": {"given": {"model": str(model)}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 0
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())["given"]
    assert result["validation"]["n"] == 89 and result["model"] == str(model)
    assert (model / "tfidf.safetensors").stat().st_mtime_ns == before


def test_paths_in_a_compare_config_are_relative_to_the_file_from_any_directory(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    (folder / "recipes").mkdir(parents=True)
    (folder / "recipes" / "tfidf.yaml").write_text((REPO / "configs" / "tfidf.yaml").read_text())
    (folder / "data").mkdir()
    for split in ("train", "validation"):
        (folder / "data" / f"{split}.json").write_bytes((SAMPLE / f"annotation_{split}.json").read_bytes())
    config = {"out": "out", "train": "data/train.json", "validation": "data/validation.json",
              "methods": {"tfidf": {"recipe": "recipes/tfidf.yaml"}}}
    (folder / "compare.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["compare", "--config", str(folder / "compare.yaml")]) == 0
    assert (elsewhere / "out" / "comparison.md").is_file()  # `out` is where the command runs
    assert json.loads((elsewhere / "out" / "comparison.json").read_text())["tfidf"]["validation"]["n"] == 89
    assert_inputs_exist(REPO / "configs" / "compare.yaml")  # the shipped config on the bundled sample


@pytest.mark.needs_data
def test_the_shipped_bmeld_compare_config_names_inputs_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_inputs_exist(REPO / "configs" / "compare-bmeld.yaml")


def assert_inputs_exist(config: Path) -> None:
    """Every input path a shipped compare config names exists, seen from another directory."""
    shipped = load_compare_config(config)
    assert all(Path(m.recipe).is_file() for m in shipped.methods.values())
    assert all(Path(getattr(shipped, k)).is_file() for k in ("train", "validation", "test") if getattr(shipped, k))


@pytest.mark.integration
def test_a_calibrated_model_scored_on_its_own_calibration_split_is_marked_with_the_cross_fitted_figure(
    tmp_path, capsys
):
    model, validation = tmp_path / "tfidf", SAMPLE / "annotation_validation.json"
    assert main(["train", "--config", str(REPO / "configs" / "tfidf.yaml"), f"out={model}", "data.test=null"]) == 0
    assert main(["calibrate", "--model", str(model), "--validation", str(validation), "--force"]) == 0
    report = json.loads((model / "erckit_model.json").read_text())["calibration_report"]
    config = {"out": str(tmp_path / "c"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(validation), "test": str(SAMPLE / "annotation_test.json"),
              "methods": {"calibrated": {"model": str(model)}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    capsys.readouterr()
    assert main(["compare", "--config", str(path)]) == 0
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())["calibrated"]
    assert result["validation_calibration"]["fitted_on"] == "this split"
    assert result["validation_calibration"]["cross_fitted_macro_f1"] == report["macro_f1_after"]
    assert result["test_calibration"] == {"fitted_on": "another file"}
    validation_table, test_table = (tmp_path / "c" / "comparison.md").read_text().split("## test")
    row = next(line for line in validation_table.splitlines() if line.startswith("| calibrated"))
    assert row.startswith("| calibrated† |")
    assert f"(cross-fitted {report['macro_f1_after']:.4f})" in row and "† calibration offsets fitted on this split" in validation_table
    assert "| calibrated |" in test_table and "†" not in test_table
    assert "| calibrated |" in capsys.readouterr().out  # the printed table is the test split's
