"""Every shipped recipe parses and validates; overrides and bad recipes behave."""

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SAMPLE_DATA
from erckit import recipes
from erckit.cli import main
from erckit.config import ConfigError, load_config
from erckit.llm.chat import CHAT_TEMPLATES

RECIPES = [recipes.path(name) for name in recipes.names()]


def test_the_configs_folder_keeps_only_compare_and_launcher_configs():
    assert {p.name for p in (REPO / "configs").glob("*.yaml")} == {"compare.yaml", "compare-bmeld.yaml"}
    assert [p.stem for p in RECIPES] == ["baichuan2-13b-lora", "bert_bigru", "gemma-270m-dialogue",
                                         "gemma-270m-lora", "qwen2.5-7b-instruct-lora", "tfidf"]


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_recipe_parses_names_its_command_and_no_data(recipe):
    text = recipe.read_text(encoding="utf-8")
    assert text.startswith("# ")
    assert f"--config {recipe.stem}" in text.split("\nmodel:")[0]
    assert "data" not in yaml.safe_load(text)  # data paths come from the command line
    assert recipes.summary(recipe.stem)
    config = load_config(recipe.stem)
    if config.model == "llm":
        assert config.llm.template in CHAT_TEMPLATES
        if config.llm.deepspeed:
            shipped = Path(recipes.deepspeed_config(config.llm.deepspeed))
            assert json.loads(shipped.read_text())["zero_optimization"]["stage"] in (2, 3)
    assert config.data.train is None


def test_reference_recipe_has_the_reference_pipelines_hyperparameters():
    llm = load_config("baichuan2-13b-lora").llm
    assert (llm.template, llm.lora.rank, llm.lora.target_modules, llm.lr, llm.scheduler) == (
        "baichuan2", 64, "all-linear", 1e-5, "cosine")
    assert (llm.batch_size, llm.grad_accum, llm.epochs, llm.eval_steps, llm.precision) == (2, 32, 30, 100, "fp16")
    assert llm.trust_remote_code is True


@pytest.mark.parametrize("name", ["deepspeed_zero2.yaml", "fsdp.yaml"])
def test_accelerate_configs_leave_the_precision_to_the_recipe_and_pass_accelerates_checks(name, monkeypatch):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin

    path = REPO / "configs" / "accelerate" / name
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "erckit", "train"])
    args, defaults, precision_from_file = _validate_launch_command(args)  # what `accelerate launch` does first
    assert args.num_processes >= 1 and (args.use_deepspeed or args.use_fsdp)
    # a launcher's mixed precision would win over the recipe's llm.precision (TrainingArguments reads it when
    # neither fp16 nor bf16 is set, as with llm.precision=fp32), and the run record would not say so
    assert args.mixed_precision == "no"
    if args.use_deepspeed:  # the fields the launcher hands each process (accelerate's launch_command)...
        fields = [*defaults.deepspeed_config, *(["mixed_precision"] if precision_from_file else [])]
        monkeypatch.setenv("ACCELERATE_CONFIG_DS_FIELDS", ",".join(fields).lower())
        DeepSpeedPlugin(hf_ds_config=str(REPO / "src" / "erckit" / "recipes" / "deepspeed" / "zero2.json"))  # ...pass


def test_overrides_are_typed_and_unknown_keys_refused(tmp_path):
    config = load_config("bert_bigru", ["train.epochs=2", "train.lr=1e-4", "data.test=null", "data={}"])  # null: unset
    assert config.train.epochs == 2 and config.train.lr == 1e-4
    with pytest.raises(ConfigError, match="^bert_bigru: unknown key 'train.epoch'"):  # recipe, then the dotted key
        load_config("bert_bigru", ["train.epoch=2"])
    with pytest.raises(ConfigError, match="^bert_bigru: train.epochs: expected int, got 'two'$"):
        load_config("bert_bigru", ["train.epochs=two"])
    with pytest.raises(ConfigError, match="^tfidf: unknown key 'tfid' "):
        load_config("tfidf", ["tfid.c=2"])
    recipe = tmp_path / "keys.yaml"  # YAML reads `1:` as a number: unknown keys of mixed types, named
    recipe.write_text("model: tfidf\n1: a\nfoo: b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 1 "):
        load_config(recipe)
    with pytest.raises(ConfigError, match="^bert_bigru: data.test is not read by model bert_bigru .*; remove it$"):
        load_config("bert_bigru", ["data.test=annotation_test.json"])  # a test file is labelled by erckit predict
    assert load_config("bert_bigru", ["train.epochs=2", "train.epochs=3"]).train.epochs == 3  # the last one
    with pytest.raises(ConfigError, match="encoder.speaker must be name, letter or none"):
        load_config("bert_bigru", ["encoder.speaker=names"])


def test_bad_recipe_from_the_cli_is_one_line_exit_2(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("model: bert_bigru\ntrain:\n  epochs: [1\n", encoding="utf-8")
    assert main(["train", "--config", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.yaml: malformed YAML at line 4 column 1: while parsing a flow sequence" in err


def test_yaml_anchors_and_merge_keys_still_work(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: tfidf\nbase: &base {c: 0.5, ngram_max: 2}\ntfidf:\n  <<: *base\n  ngram_max: 3\n",
                      encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown key 'base'"):  # the anchor's own key is still a key
        load_config(str(recipe))
    recipe.write_text("model: tfidf\ntfidf:\n  <<: {c: 0.5, ngram_max: 2}\n  ngram_max: 3\n", encoding="utf-8")
    config = load_config(str(recipe))
    assert (config.tfidf.c, config.tfidf.ngram_max) == (0.5, 3)  # merged, then overridden as YAML says


@pytest.mark.parametrize("text, args, problem", [
    ("model: tfidf\ntfidf:\n  c: 1\n  c: 2\n", [], "malformed YAML: key 'c' given twice (line 4)"),
    ("", [], "names no model (model: bert_bigru, tfidf, llm, fusion)"),  # not the default model, minutes of training
    ("tfidf:\n  c: 1\n", [], "names no model (model: bert_bigru, tfidf, llm, fusion)"),
    ("model: tfidf\n", ["--out", "a", "out=b"], "--out a and out=b both name the output folder: keep one"),
])
def test_a_recipe_that_says_two_things_or_nothing_is_refused(text, args, problem, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("recipe.yaml").write_text(text, encoding="utf-8")
    assert main(["train", "--config", "recipe.yaml", SAMPLE_DATA[0], *args, SAMPLE_DATA[1]]) == 2  # values around flags
    assert capsys.readouterr().err.endswith(f"{problem}\n") and sorted(p.name for p in tmp_path.iterdir()) == ["recipe.yaml"]


def test_llm_deepspeed_is_a_shipped_name_or_a_file_checked_before_anything_is_written(tmp_path, capsys):
    assert recipes.deepspeed_config("zero3").endswith("zero3.json")
    own = tmp_path / "mine.json"
    own.write_text("{}")
    assert recipes.deepspeed_config(str(own)) == str(own)
    out = tmp_path / "run"
    assert main(["train", "--config", "gemma-270m-lora", f"out={out}", "llm.deepspeed=zero9",
                 "data.train=x.json"]) == 2
    err = capsys.readouterr().err
    assert "llm.deepspeed: zero9 is not a file, nor a shipped DeepSpeed config (zero2, zero3)" in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize("deepspeed", ["zero3", "own_stage3.json"])
def test_qlora_under_zero3_is_refused_before_anything_is_written(deepspeed, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("own_stage3.json").write_text('{"zero_optimization": {"stage": 3}}', encoding="utf-8")
    args = ["train", "--config", "qwen2.5-7b-instruct-lora", "--out", "run", "llm.finetuning=qlora",
            f"llm.deepspeed={deepspeed}", "data.train=x.json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"llm.finetuning=qlora with llm.deepspeed={deepspeed} (ZeRO stage 3)" in err and err.count("\n") == 1
    assert not Path("run").exists()
    assert recipes.zero_stage(recipes.deepspeed_config("zero2")) == 2


def test_key_values_on_both_sides_of_a_flag_all_count(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", "--config", "tfidf", SAMPLE_DATA[0], "--out", str(out), SAMPLE_DATA[1], "tfidf.c=0.5"]) == 0
    saved = json.loads((out / "erckit_model.json").read_text())["config"]
    assert saved["tfidf"]["c"] == 0.5 and saved["data"]["validation"] == SAMPLE_DATA[1].split("=", 1)[1]
    with pytest.raises(SystemExit, match="2"):  # argparse's own usage error
        main(["train", "--config", "tfidf", "--out", str(out), "--bogus", SAMPLE_DATA[0]])
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err
