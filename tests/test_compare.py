"""`erckit compare` on the sample: one table, one chart, finished runs reused."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import BMELD, REPO, SAMPLE, SAMPLE_DATA
from erckit.cli import main
from erckit.compare import load_compare_config, method_recipe, seed_summary, seed_table
from erckit.config import ConfigError, RunConfig, to_dict
from erckit.data import DataError
from erckit.recipes import resolve


def test_shipped_compare_config_parses():
    config = load_compare_config(REPO / "configs" / "compare.yaml")
    assert {"tfidf", "bert_bigru", "lora_emotion", "lora_speaker_info", "lora_same_speaker_multitask",
            "lora_dialogue_form"} == set(config.methods)
    for method in config.methods.values():
        assert resolve(method.recipe).is_file()
    splits = [f"train={SAMPLE / 'annotation_train.json'}", f"validation={SAMPLE / 'annotation_validation.json'}"]
    bmeld = load_compare_config(REPO / "configs" / "compare-bmeld.yaml", splits)  # the data comes from the command
    seeds = [f"encoder_utterance-seed{n}" for n in range(3)]
    subset = ["encoder_250", "gemma_dialogue_250", "gemma_dialogue_number_250", "gemma_dialogue_marker_250",
              "gemma_window_250", "gemma_window_speaker_250", "gemma_window_same_speaker_250"]
    balanced = [f"encoder_utterance_balanced-seed{n}" for n in range(2)]
    head_rate = [f"encoder_utterance_headlr5e4-seed{n}" for n in range(3)]
    top6 = [f"encoder_utterance_top6_layers-seed{n}" for n in range(3)]
    averaged = [f"encoder_utterance_ema995-seed{n}" for n in range(2)]
    smoothed = [f"encoder_utterance_smooth01-seed{n}" for n in range(3)]
    assert {"tfidf", *seeds, "encoder_dialogue", "encoder_utterance_all_layers", *balanced, "encoder_utterance_power075",
            "encoder_utterance_top2_layers", "encoder_utterance_dropout03", "encoder_utterance_lr1e4",
            *top6, *head_rate, "encoder_utterance_speaker_letter", *averaged, *smoothed,
            "gemma_dialogue", *subset, "fusion_seeds",
            "fusion_headlr5e4_seeds", "fusion_encoders", "fusion_llm_encoder", "fusion_all"} == set(bmeld.methods)
    assert bmeld.methods["fusion_seeds"].fusion == seeds
    assert bmeld.methods["fusion_headlr5e4_seeds"].fusion == head_rate
    for seeded in (head_rate, top6, averaged, smoothed):  # each seed paired with the default's same seed
        assert [pair for pair in bmeld.pairs if pair[0] in seeded] == [[h, d] for h, d in zip(seeded, seeds, strict=False)]
    assert bmeld.methods["fusion_llm_encoder"].fusion == [*seeds, "gemma_dialogue"]
    assert bmeld.methods["fusion_all"].fusion == ["tfidf", *seeds, "encoder_dialogue", "gemma_dialogue"]
    assert {Path(bmeld.methods[name].train).resolve() for name in subset} == {
        REPO / "runs" / "bmeld_subset" / "train_250.csv"}  # where `make bench-bmeld` draws the subset
    recipes = {name: method_recipe(method, bmeld, Path("runs") / name).llm for name, method in bmeld.methods.items()
               if name.startswith("gemma_") and name.endswith("_250")}
    equal = {(r.lora.rank, r.lora.dropout, r.epochs, r.lr, r.scheduler, r.warmup_ratio, r.class_weight_power,
              r.eval_steps, r.eval_subset) for r in recipes.values()}
    assert len(equal) == 1  # the subset's LLM methods differ in their prompt only
    assert {(r.prompt.form, r.prompt.question, r.prompt.variant, r.prompt.same_speaker) for r in recipes.values()} == {
        ("dialogue", "quoted", "emotion", 0), ("dialogue", "number", "emotion", 0), ("dialogue", "marker", "emotion", 0),
        ("window", "number", "emotion", 0), ("window", "number", "speaker", 0), ("window", "number", "emotion", 2)}


def test_a_method_trains_on_its_own_file_and_a_moved_comparison_is_reused(tmp_path, capsys):
    subset = tmp_path / "first_dialogues.json"
    data = json.loads((SAMPLE / "annotation_train.json").read_text(encoding="utf-8"))
    show, dialogues = next(iter(data.items()))
    subset.write_text(json.dumps({show: dict(list(dialogues.items())[:5])}, ensure_ascii=False), encoding="utf-8")
    config = {"out": "compare", "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"), "test": str(SAMPLE / "annotation_test.json"),
              "methods": {"all": {"recipe": "tfidf"}, "some": {"recipe": "tfidf", "train": subset.name}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    out = tmp_path / "compare"
    assert main(["compare", "--config", str(path), f"out={out}"]) == 0
    results = json.loads((out / "comparison.json").read_text())
    some = json.loads((out / "some" / "model" / "erckit_model.json").read_text())
    assert some["data_sha256"]["train"] == results["some"]["scored"]["train"] != results["all"]["scored"]["train"]
    assert results["some"]["test"]["n"] == results["all"]["test"]["n"] == 96  # scored on the same files
    assert "`tfidf` trained on first_dialogues.json" in (out / "comparison.md").read_text()
    capsys.readouterr()
    out.rename(tmp_path / "moved")
    older = tmp_path / "moved" / "all" / "result.json"  # as an older erckit wrote it: every section, no report_to
    result = json.loads(older.read_text())
    flat = to_dict(RunConfig(model="tfidf")) | {"data": result["recipe"]["data"], "tfidf": result["recipe"]["tfidf"]}
    del flat["report_to"]
    older.write_text(json.dumps(result | {"recipe": flat}))
    assert main(["compare", "--config", str(path), f"out={tmp_path / 'moved'}"]) == 0
    assert capsys.readouterr().out.count(": reusing") == 2  # nothing retrained or rescored
    moved = json.loads((tmp_path / "moved" / "comparison.json").read_text())
    assert moved["some"]["model"] == str(tmp_path / "moved" / "some" / "model")  # where the model is now
    subset.unlink()  # a missing training file is named before anything trains
    assert main(["compare", "--config", str(path), f"out={tmp_path / 'third'}"]) == 2
    assert "first_dialogues.json" in capsys.readouterr().err and not (tmp_path / "third").exists()
    config["methods"]["given"] = {"model": str(out), "train": subset.name}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(ConfigError, match="'train' is a recipe's training file"):
        load_compare_config(path)


def test_compare_methods_chooses_among_the_files_methods():
    from erckit.cli import build_parser
    from erckit.config import ConfigError

    args = build_parser().parse_args(["compare", "--config", "configs/compare.yaml", "--methods", "tfidf", "bert_bigru"])
    config = load_compare_config(REPO / "configs" / "compare.yaml", args.overrides, args.methods)
    assert set(config.methods) == {"tfidf", "bert_bigru"}
    with pytest.raises(ConfigError, match="no method 'svm'"):
        load_compare_config(REPO / "configs" / "compare.yaml", [], ["tfidf", "svm"])
    with pytest.raises(ConfigError, match="fusion member 'gemma_dialogue'"):  # a fusion keeps its members
        load_compare_config(REPO / "configs" / "compare-bmeld.yaml",
                            [f"train={SAMPLE / 'annotation_train.json'}", f"validation={SAMPLE / 'annotation_validation.json'}"],
                            ["tfidf", "encoder_utterance", "encoder_dialogue", "fusion_all"])


def test_compare_writes_table_and_chart_and_reuses_finished_runs(tmp_path, capsys):
    config = {
        "out": str(tmp_path / "compare"),
        "train": str(SAMPLE / "annotation_train.json"),
        "validation": str(SAMPLE / "annotation_validation.json"),
        "test": str(SAMPLE / "annotation_test.json"),
        "methods": {
            "tfidf_1gram": {"recipe": "tfidf", "overrides": ["tfidf.ngram_max=1"]},
            "tfidf_3gram": {"recipe": "tfidf"},
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


def test_the_pairs_a_comparison_names_get_their_paired_difference_on_every_split(tmp_path, capsys):
    from erckit.data import dialogue_groups, gold_labels, iter_utterances
    from erckit.formats import read_dialogues
    from erckit.intervals import paired_difference
    from erckit.predictions import read_predictions

    config = {"out": str(tmp_path / "compare"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"), "test": str(SAMPLE / "annotation_test.json"),
              "methods": {"one": {"recipe": "tfidf", "overrides": ["tfidf.ngram_max=1"]},
                          "three": {"recipe": "tfidf", "seeds": [0, 1]}},
              "pairs": [["one", "three-seed1"]]}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 0
    out = tmp_path / "compare"
    results = json.loads((out / "comparison.json").read_text())
    dialogues = read_dialogues(SAMPLE / "annotation_test.json")
    ids = [u.id for u in iter_utterances(dialogues)]
    gold = gold_labels(dialogues, "test")
    one, three = (read_predictions(out / name / "predictions_test.jsonl") for name in ("one", "three-seed1"))
    expected = paired_difference([gold[i] for i in ids], [one[i].label for i in ids], [three[i].label for i in ids],
                                 dialogue_groups(dialogues))
    assert results["one"]["test_pairs"]["three-seed1"] == expected
    assert expected["difference"] == pytest.approx(results["one"]["test"]["macro_f1"] - results["three-seed1"]["test"]["macro_f1"])
    low, high = expected["interval"]
    table = (out / "comparison.md").read_text(encoding="utf-8")
    assert f"| one − three-seed1 | {results['one']['validation_pairs']['three-seed1']['difference']:+.4f}" in table
    assert f"{expected['difference']:+.4f} ({low:+.3f} to {high:+.3f}) |" in table
    capsys.readouterr()
    assert main(["compare", "--config", str(path), "--methods", "one"]) == 0  # a pair of methods left out is left out
    assert "Pairs named" not in (out / "comparison.md").read_text(encoding="utf-8")
    only_one = tmp_path / "only_one"  # an override after --methods is an override, not a method name
    assert main(["compare", "--config", str(path), "--methods", "one", f"out={only_one}"]) == 0
    assert list(json.loads((only_one / "comparison.json").read_text())) == ["one"]
    with pytest.raises(SystemExit, match="2"):
        main(["compare", "--config", str(path), "--methods", f"out={only_one}"])
    assert "--methods needs a method name of the file" in capsys.readouterr().err
    later = tmp_path / "later"  # overrides on both sides of flags count in command-line order: the last out= wins
    assert main(["compare", "--config", str(path), f"out={tmp_path / 'first'}", "--methods", "one",
                 f"out={tmp_path / 'second'}", "--trust-remote-code", f"out={later}"]) == 0
    assert (later / "comparison.json").is_file() and not (tmp_path / "first").exists() and not (tmp_path / "second").exists()
    fewer_seeds = load_compare_config(path, ["methods.three.seeds=[0]"])  # a seed left out leaves its pair out
    assert set(fewer_seeds.methods) == {"one", "three-seed0"} and fewer_seeds.pairs == []
    assert load_compare_config(path, ["methods.three.seeds=[1, 5]", "pairs=[[one, three-seed5]]"]).pairs == [
        ["one", "three-seed5"]]  # a seed the overrides add can be paired
    for pairs, problem in (([["one", "one"]], "two different method names"), ([["one", "tree"]], "no method 'tree'"),
                           ([["one", "three"]], "'three' has several seeds"), ([["one", "three-seed5"]], "no method 'three-seed5'")):
        path.write_text(yaml.safe_dump(config | {"pairs": pairs}), encoding="utf-8")
        with pytest.raises(ConfigError, match=problem):
            load_compare_config(path)


def test_a_finished_model_folder_joins_the_comparison_without_retraining(tmp_path, capsys):
    from erckit.config import load_config
    from erckit.models import train

    model = tmp_path / "trained"
    train(load_config("tfidf", [f"out={model}", *SAMPLE_DATA]))
    before = (model / "tfidf.safetensors").stat().st_mtime_ns
    config = {"out": str(tmp_path / "c"),  # no train file: nothing is trained here
              "validation": str(SAMPLE / "annotation_validation.json"), "methods": {"given": {"model": str(model)}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config | {"methods": {**config["methods"], "tfidf": {"recipe": "tfidf"}}}),
                    encoding="utf-8")
    with pytest.raises(ConfigError, match="train is required: method 'tfidf' trains on it"):
        load_compare_config(path)
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 0
    result = json.loads((tmp_path / "c" / "comparison.json").read_text())["given"]
    assert result["validation"]["n"] == 89 and result["model"] == str(model)
    assert (model / "tfidf.safetensors").stat().st_mtime_ns == before
    capsys.readouterr()
    assert main(["compare", "--config", str(path)]) == 0
    assert "given: reusing" in capsys.readouterr().out
    shutil.rmtree(model)  # trained again, on the validation file this time: its old scores must not be reused
    train(load_config("tfidf", [f"out={model}", f"data.train={SAMPLE / 'annotation_validation.json'}"]))
    assert main(["compare", "--config", str(path)]) == 0
    assert "given: reusing" not in capsys.readouterr().out
    again = json.loads((tmp_path / "c" / "comparison.json").read_text())["given"]
    assert again["validation"]["macro_f1"] > result["validation"]["macro_f1"]  # it has seen these labels


def test_paths_in_a_compare_config_are_relative_to_the_file_from_any_directory(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    (folder / "recipes").mkdir(parents=True)
    (folder / "recipes" / "tfidf.yaml").write_text(resolve("tfidf").read_text())
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
    # a bare recipe name with no file beside the compare file is the shipped one, as `train --config` reads it
    config["methods"] = {"tfidf": {"recipe": "tfidf.yaml"}}
    (folder / "compare.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    assert load_compare_config(folder / "compare.yaml").methods["tfidf"].recipe == "tfidf.yaml"
    assert main(["compare", "--config", str(folder / "compare.yaml")]) == 0
    # a path stays relative to the compare file, even where the current folder holds a file of that path
    (elsewhere / "recipes").mkdir()
    (elsewhere / "recipes" / "other.yaml").write_text(resolve("tfidf").read_text())
    config["methods"] = {"tfidf": {"recipe": "recipes/other.yaml"}}
    (folder / "compare.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    with pytest.raises(DataError, match=f"^{folder / 'recipes' / 'other.yaml'}: cannot read"):
        load_compare_config(folder / "compare.yaml")
    assert_inputs_exist(REPO / "configs" / "compare.yaml")  # the shipped config on the bundled sample


@pytest.mark.needs_data
def test_the_shipped_bmeld_compare_config_names_inputs_that_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    splits = [f"{key}={BMELD / f'{name}_sent_emo.csv'}" for key, name in
              (("train", "train"), ("validation", "dev"), ("test", "test"))]
    assert_inputs_exist(REPO / "configs" / "compare-bmeld.yaml", splits)


def assert_inputs_exist(config: Path, overrides: list[str] = ()) -> None:
    """Every input path a shipped compare config names exists, seen from another directory."""
    shipped = load_compare_config(config, overrides)
    assert all(resolve(m.recipe).is_file() for m in shipped.methods.values() if m.recipe)
    assert all(Path(getattr(shipped, k)).is_file() for k in ("train", "validation", "test") if getattr(shipped, k))


@pytest.mark.integration
def test_a_calibrated_model_scored_on_its_own_calibration_split_is_marked_with_the_cross_fitted_figure(
    tmp_path, capsys
):
    model, validation = tmp_path / "tfidf", SAMPLE / "annotation_validation.json"
    assert main(["train", "--config", "tfidf", f"out={model}", *SAMPLE_DATA]) == 0
    assert main(["calibrate", "--model", str(model), "--validation", str(validation), "--force"]) == 0
    report = json.loads((model / "erckit_model.json").read_text())["calibration_report"]
    config = {"out": str(tmp_path / "c"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(validation), "test": str(SAMPLE / "annotation_test.json"),
              "methods": {"calibrated": {"model": str(model)}, "plain": {"recipe": "tfidf"}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    capsys.readouterr()
    assert main(["compare", "--config", str(path)]) == 0
    results = json.loads((tmp_path / "c" / "comparison.json").read_text())
    result = results["calibrated"]
    assert result["validation_calibration"]["fitted_on"] == "this split"
    assert result["validation_calibration"]["cross_fitted_macro_f1"] == report["macro_f1_after"]
    assert result["test_calibration"] == {"fitted_on": "another file"}
    summary, rest = (tmp_path / "c" / "comparison.md").read_text().split("## validation")
    validation_table, test_table = rest.split("## test")
    assert "| calibrated | model " in summary and "† calibration offsets fitted on this split" in summary
    assert f", cross-fitted {report['macro_f1_after']:.4f})" in summary  # beside the in-sample figure, as promised
    rows = [line.split(" |")[0][2:] for line in summary.splitlines() if line.startswith(("| calibrated |", "| plain |"))]
    honest = {"calibrated": report["macro_f1_after"], "plain": results["plain"]["validation"]["macro_f1"]}
    assert rows == sorted(honest, key=lambda name: -honest[name])  # ranked by the cross-fitted figure
    row = next(line for line in validation_table.splitlines() if line.startswith("| calibrated"))
    assert row.startswith("| calibrated† |")
    assert f"(cross-fitted {report['macro_f1_after']:.4f})" in row and "† calibration offsets fitted on this split" in validation_table
    assert "| calibrated |" in test_table and "†" not in test_table
    assert "| calibrated |" in capsys.readouterr().out  # the printed table is the test split's


def test_a_fusion_takes_weights_from_validation_only_and_every_score_has_an_interval(tmp_path, capsys):
    from erckit.ensemble import probability_matrix, weight_grid
    from erckit.formats import read_dialogues
    from erckit.metrics import scores
    from erckit.predictions import read_predictions

    tfidf = "tfidf"
    config = {
        "out": str(tmp_path / "compare"), "train": str(SAMPLE / "annotation_train.json"),
        "validation": str(SAMPLE / "annotation_validation.json"), "test": str(SAMPLE / "annotation_test.json"),
        "methods": {
            "words": {"recipe": tfidf, "overrides": ["tfidf.ngram_max=1", "tfidf.c=0.1"]},
            "trigrams": {"recipe": tfidf},
            "dropped": {"recipe": tfidf, "overrides": ["tfidf.c=9"]},
            "fused": {"fusion": ["words", "trigrams"]},
        },
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path), "methods.dropped=null"]) == 0
    out = tmp_path / "compare"
    results = json.loads((out / "comparison.json").read_text())
    assert set(results) == {"words", "trigrams", "fused"} and not (out / "dropped").exists()

    def probs(name, split):
        file = {"validation": "annotation_validation.json", "test": "annotation_test.json"}[split]
        ids = [u.id for d in read_dialogues(SAMPLE / file) for u in d.utterances]
        gold = [u.label for d in read_dialogues(SAMPLE / file) for u in d.utterances]
        path = out / name / f"predictions_{split}.jsonl"
        return probability_matrix(read_predictions(path), ids, path), gold

    (words, gold), (trigrams, _) = probs("words", "validation"), probs("trigrams", "validation")
    from erckit.labels import LABELS

    macro = {w: scores(gold, [LABELS[i] for i in (w[0] * words + w[1] * trigrams).argmax(1)])["macro_f1"]
             for w in weight_grid(2)}
    weights = results["fused"]["weights"]
    assert macro[tuple(round(w, 1) for w in weights)] == max(macro.values())  # the best on validation
    assert results["fused"]["weights_from"] == "validation macro-F1"
    (test_words, _test_gold), (test_trigrams, _) = probs("words", "test"), probs("trigrams", "test")
    fused, _ = probs("fused", "test")
    np.testing.assert_allclose(fused, weights[0] * test_words + weights[1] * test_trigrams, atol=2e-6)
    for name in results:
        low, high = results[name]["test"]["intervals"]["macro_f1"]
        assert low <= high and results[name]["test"]["intervals"]["dialogues"] == 8
    table = (out / "comparison.md").read_text(encoding="utf-8")
    assert "95% interval" in table and "Paired bootstrap over dialogues" in table
    validation_table = table.split("## test")[0]
    assert "| fused§ |" in validation_table and "| fused |" in table.split("## test")[1]  # in-sample on validation only
    best = max(results, key=lambda n: results[n]["test"]["macro_f1"])
    assert all(results[n]["test_paired"]["against"] == best for n in results if n != best)
    summary = table.split("## validation")[0].splitlines()  # one row per method, best on validation first
    rows = [line for line in summary if line.startswith("| ") and not line.startswith("| method")]
    order = sorted(results, key=lambda n: -results[n]["validation"]["macro_f1"])
    assert [row.split(" | ")[0][2:] for row in rows] == order
    fused_row = rows[order.index("fused")]
    shares = " : ".join(f"{w:.2f}" for w in weights)
    assert f"fusion of words, trigrams, {shares} (chosen on validation)" in fused_row
    low, high = results["fused"]["test"]["intervals"]["macro_f1"]
    assert f"{results['fused']['validation']['macro_f1']:.4f}§" in fused_row
    assert f"{results['fused']['test']['macro_f1']:.4f} ({low:.3f}–{high:.3f})" in fused_row
    assert "`tfidf` `tfidf.ngram_max=1` `tfidf.c=0.1`" in rows[order.index("words")]
    from erckit.models import source_commit

    commit = source_commit()  # the checkout that trained them (None in a copy without git: then "—")
    assert (commit is not None) == (REPO / ".git").exists()
    assert commit is None or commit.split("+")[0] in subprocess.run(["git", "log", "-1", "--format=%H"], cwd=REPO, check=False,
                                                                     capture_output=True, text=True).stdout
    assert all(row.endswith(f" | {commit or '—'} |") for row in rows)  # every row, the fusion's from its members


@pytest.mark.parametrize(("fusion", "problem"), [(["a", "b"], "fusion member 'b' is not a trained method"),
                                                 (["a", "fused"], "fusion member 'fused' is not a trained method"),
                                                 (["a"], "a fusion needs two or more methods")])
def test_a_fusion_of_unknown_methods_fusions_or_one_method_is_refused_before_anything_runs(tmp_path, capsys, fusion,
                                                                                            problem):
    config = {"out": str(tmp_path / "o"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"),
              "methods": {"fused": {"fusion": fusion}, "a": {"recipe": "tfidf"}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'fused'" in err and problem in err, err
    assert not (tmp_path / "o").exists()


def test_a_compare_file_cannot_set_what_the_seeds_fill(tmp_path, capsys):
    config = {"out": str(tmp_path / "o"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"), "seed_groups": {"x": ["nope"]},
              "methods": {"a": {"recipe": "tfidf"}, "b": {"recipe": "tfidf"}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 2
    assert "unknown key 'seed_groups'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("weights", "problem"), [([1, -1], "finite positive"), ([0, 1], "finite positive"),
                                                  ([1], "1 weights for 2 members")])
def test_bad_fusion_weights_are_refused_before_anything_runs(tmp_path, capsys, weights, problem):
    config = {"out": str(tmp_path / "o"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"),
              "methods": {"fused": {"fusion": ["a", "b"], "weights": weights}, "a": {"recipe": "tfidf"},
                          "b": {"recipe": "tfidf", "overrides": ["tfidf.ngram_max=1"]}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method 'fused'" in err and problem in err and "--weights" not in err, err
    assert not (tmp_path / "o").exists()


def test_a_recipe_with_seeds_runs_once_per_seed_reports_mean_and_spread_and_fuses_its_seeds(tmp_path):
    import statistics

    config = {
        "out": str(tmp_path / "compare"), "train": str(SAMPLE / "annotation_train.json"),
        "validation": str(SAMPLE / "annotation_validation.json"),
        "methods": {"tfidf": {"recipe": "tfidf", "seeds": [0, 1, 2]},
                    "seeds_fused": {"fusion": ["tfidf"]}},
    }
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 0
    out = tmp_path / "compare"
    results = json.loads((out / "comparison.json").read_text())
    members = ["tfidf-seed0", "tfidf-seed1", "tfidf-seed2"]
    assert set(results) == {*members, "seeds_fused"} and results["seeds_fused"]["fusion"] == members
    for seed, name in enumerate(members):
        assert json.loads((out / name / "model" / "erckit_model.json").read_text())["config"]["train"]["seed"] == seed
    row = results["tfidf-seed1"]["validation_seeds"]
    values = [results[m]["validation"]["macro_f1"] for m in members]
    assert row["recipe"] == "tfidf" and row["macro_f1"]["values"] == values
    assert row["macro_f1"]["mean"] == pytest.approx(statistics.fmean(values))
    assert row["macro_f1"]["sd"] == pytest.approx(statistics.stdev(values))
    assert "| tfidf | 3 |" in (out / "comparison.md").read_text(encoding="utf-8")
    config["methods"]["seeds_fused"]["weights"] = [1]  # one weight per seed, not per recipe named
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"1 weights for 3 members \(tfidf-seed0, tfidf-seed1, tfidf-seed2: a "
                                          r"seeded recipe is one member per seed\)"):
        load_compare_config(path)


def test_seed_table_of_one_seed_shows_no_spread():
    results = {"a-seed0": {"validation": {"macro_f1": 0.4422, "weighted_f1": 0.5730}}}
    summary = seed_summary(results, {"a": ["a-seed0"]}, "validation")
    assert summary["a"]["macro_f1"]["sd"] is None
    assert "| a | 1 | 0.4422 (one seed: no spread) | 0.5730 (one seed: no spread) | 0.4422 |" in seed_table(summary)


@pytest.mark.parametrize("split", ["validation", "test"])
def test_a_partly_labelled_scored_file_is_refused_before_anything_trains(tmp_path, capsys, split):
    """Validation is what methods are compared on: it must be labelled; a test file is labelled or not at all
    (an unlabelled test file is left unscored). Refused naming the utterance, nothing written."""
    from conftest import REFERENCE_DIALOGUE, m3ed_file

    turns = [(s, t, "Happy" if i else None) for i, (s, t) in enumerate(REFERENCE_DIALOGUE)]
    partial = m3ed_file(tmp_path / "partial.json", {"d1": turns})
    config = {"out": str(tmp_path / "compare"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"), "methods": {"tfidf": {"recipe": "tfidf"}}}
    config[split] = str(partial)
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"erckit compare: error: {partial}: utterance d1_1: has no gold label\n"
    assert not (tmp_path / "compare").exists()


def test_an_unlabelled_test_file_is_left_unscored_and_said_so(tmp_path, capsys):
    from conftest import REFERENCE_DIALOGUE, m3ed_file

    unlabelled = m3ed_file(tmp_path / "test.json", {"d1": [(s, t, None) for s, t in REFERENCE_DIALOGUE]})
    config = {"out": str(tmp_path / "compare"), "train": str(SAMPLE / "annotation_train.json"),
              "validation": str(SAMPLE / "annotation_validation.json"), "test": str(unlabelled),
              "methods": {"tfidf": {"recipe": "tfidf"}}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    assert main(["compare", "--config", str(path)]) == 0
    assert f"test: {unlabelled} has no labels: it is not scored" in capsys.readouterr().out
    assert set(json.loads((tmp_path / "compare" / "comparison.json").read_text())["tfidf"]) >= {"validation"}
    assert "test" not in json.loads((tmp_path / "compare" / "comparison.json").read_text())["tfidf"]
