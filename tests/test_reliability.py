"""Validated before anything is written, nothing silently wrong, every error names its file:
tables of bad cases, each a one-line error with exit code 2 and no output (or the right result)."""

import json
import shutil

import numpy as np
import pytest

from conftest import SAMPLE, SAMPLE_DATA, m3ed_file
from erckit.cli import main
from erckit.labels import LABELS
from erckit.predictions import Prediction, read_predictions, write_predictions

TFIDF = "tfidf"
GOOD = [("A", "你好", "Happy"), ("B", "嗯", "Neutral")]
IDS = ["d1_1", "d1_2"]
NO_SPLITS = [*SAMPLE_DATA, "data.validation=null"]


def one_line_error(capsys, *parts: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in err, err
    return err


# ------------------------------------------------------------------------ recipe values, checked at load

BAD_RECIPE_VALUES = {
    "tfidf-c-negative": (["tfidf.c=-1"], "tfidf.c must be a positive number, not -1.0"),
    "tfidf-c-nan": (["tfidf.c=.nan"], "tfidf.c must be a positive number, not nan"),
    "tfidf-ngrams-reversed": (["tfidf.ngram_min=3", "tfidf.ngram_max=2"], "tfidf.ngram_max must be at least tfidf.ngram_min (3), not 2"),
    "tfidf-max-features-0": (["tfidf.max_features=0"], "tfidf.max_features must be 1 or more, not 0"),
    "epochs-0": (["train.epochs=0"], "train.epochs must be 1 or more, not 0"),
    "epochs-negative": (["train.epochs=-1"], "train.epochs must be 1 or more, not -1"),
    "batch-dialogues-0": (["train.batch_dialogues=0"], "train.batch_dialogues must be 1 or more, not 0"),
    "lr-0": (["train.lr=0"], "train.lr must be a positive number, not 0.0"),
    "dropout-1": (["classifier.dropout=1"], "classifier.dropout must be in [0, 1), not 1.0"),
    "encoder-max-length-0": (["encoder.max_length=0"], "encoder.max_length must be at least 2 tokens, not 0"),
    "data-format": (["data.format=xml"], "data.format must be null or one of m3ed, csv, jsonl, not 'xml'"),
    "llm-window-0": (["model=llm", "llm.prompt.window=0"], "llm.prompt.window must be at least 1, not 0"),
    "llm-finetuning-typo": (["model=llm", "llm.finetuning=qlra"], "llm.finetuning must be lora or qlora or full, not 'qlra'"),
    "llm-precision-fp8": (["model=llm", "llm.precision=fp8"], "llm.precision must be auto, fp32, fp16, bf16, not 'fp8'"),
    "llm-template": (["model=llm", "llm.template=llama9"], "llm.template must be baichuan2, qwen2.5, chatml, gemma, plain, not 'llama9'"),
    "llm-scheduler": (["model=llm", "llm.scheduler=cosinus"], "llm.scheduler must be linear, cosine"),
    "llm-lora-rank-0": (["model=llm", "llm.lora.rank=0"], "llm.lora.rank must be 1 or more, not 0"),
    "llm-placement": (["model=llm", "llm.prompt.placement=future"], "llm.prompt.placement must be one of"),
    "llm-eval-steps-0": (["model=llm", "llm.eval_steps=0"], "llm.eval_steps must be 1 or more, not 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPE_VALUES))
def test_a_bad_recipe_value_is_refused_before_anything_is_written(case, tmp_path, capsys):
    overrides, message = BAD_RECIPE_VALUES[case]
    out = tmp_path / "model"
    assert main(["train", "--config", TFIDF, f"out={out}", *NO_SPLITS, *overrides]) == 2
    one_line_error(capsys, TFIDF, message)
    assert not out.exists()


def test_the_corrected_rerun_of_a_refused_run_trains(tmp_path, capsys):
    out = tmp_path / "model"
    assert main(["train", "--config", TFIDF, f"out={out}", *NO_SPLITS, "tfidf.c=-1"]) == 2
    assert main(["train", "--config", TFIDF, f"out={out}", *NO_SPLITS, "tfidf.c=1"]) == 0
    assert json.loads((out / "erckit_model.json").read_text())["finished"] is True


def test_a_run_that_failed_before_its_first_checkpoint_does_not_block_the_corrected_one(tmp_path, capsys):
    one_class = m3ed_file(tmp_path / "one_class.json", {"d1": [("A", "好", "Happy"), ("B", "好的", "Happy")]})
    out = tmp_path / "model"
    assert main(["train", "--config", TFIDF, f"out={out}", *NO_SPLITS, f"data.train={one_class}"]) == 2
    capsys.readouterr()
    assert main(["train", "--config", TFIDF, f"out={out}", *NO_SPLITS]) == 0
    assert "another recipe" not in capsys.readouterr().err


def test_a_finished_run_is_reused_only_for_the_same_data_content(tmp_path, capsys):
    train = tmp_path / "annotation_train.json"
    shutil.copy(SAMPLE / "annotation_train.json", train)
    args = ["train", "--config", TFIDF, f"out={tmp_path / 'model'}", *NO_SPLITS, f"data.train={train}"]
    assert main(args) == 0
    assert main(args) == 0 and "reusing it" in capsys.readouterr().out
    data = json.loads(train.read_text(encoding="utf-8"))
    show = next(iter(data))
    dialogue = next(iter(data[show]))
    del data[show][dialogue]
    train.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    assert main(args) == 2
    one_line_error(capsys, "trained on other data", "data.train")


def test_compare_checks_every_recipe_before_training_any(tmp_path, capsys):
    out = tmp_path / "cmp"
    config = tmp_path / "compare.yaml"
    config.write_text(
        f"out: {out}\ntrain: {SAMPLE / 'annotation_train.json'}\nvalidation: {SAMPLE / 'annotation_validation.json'}\n"
        f"methods:\n  good: {{recipe: {TFIDF}}}\n  bad: {{recipe: {TFIDF}, overrides: [tfidf.max_features=0]}}\n",
        encoding="utf-8",
    )
    assert main(["compare", "--config", str(config)]) == 2
    one_line_error(capsys, str(config), "method 'bad'", "tfidf.max_features must be 1 or more")
    assert not out.exists()
    config.write_text(config.read_text(encoding="utf-8").replace("  good: {", "  number: 3\n  good: {"), encoding="utf-8")
    assert main(["compare", "--config", str(config)]) == 2
    one_line_error(capsys, str(config), "method 'number' must be a mapping")


# ------------------------------------------------------------------------------ nothing silently wrong


def prepared_and_rows(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    raw = m3ed_file(tmp_path / "annotation_test.json",
                    {"d1": [("A", "你好", "Happy"), ("B", "嗯", "Neutral"), ("A", "走开", "Anger"), ("B", "哇", "Surprise")]})
    assert main(["prepare", "--test", str(raw), "--out", str(tmp_path / "prepared")]) == 0
    records = json.loads((tmp_path / "prepared" / "data_test.json").read_text(encoding="utf-8"))
    return raw, tmp_path / "prepared" / "data_test.json", [{"predict": r["output"], "label": r["output"]} for r in records]


def combine_generated(tmp_path, rows):
    raw, prepared, _ = prepared_and_rows(tmp_path)
    generated = tmp_path / "generated_predictions.jsonl"
    generated.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "test_label.json"
    code = main(["combine", "--predictions", str(generated), "--prepared", str(prepared), "--raw", str(raw), "--out", str(out)])
    return code, out


def test_llamafactory_rows_without_prompt_are_checked_by_their_label(tmp_path, capsys):
    _, _, rows = prepared_and_rows(tmp_path / "a")
    code, out = combine_generated(tmp_path / "b", rows)  # in order: accepted
    assert code == 0 and json.loads(out.read_text(encoding="utf-8"))["Show"]["d1"]["Dialog"]["d1_3"]["EmoAnnotation"][
        "final_main_emo"] == "Anger"
    assert "was labelled already: 4 of the 4 labels" in capsys.readouterr().err  # a labelled raw file: noted
    code, out = combine_generated(tmp_path / "c", [rows[1], rows[0], *rows[2:]])  # another order: refused
    assert code == 2 and not out.exists()
    one_line_error(capsys, "generated_predictions.jsonl: line 1", "label 'Neutral' is not the answer 'Happy'", "another order")
    code, out = combine_generated(tmp_path / "d", [{"predict": r["predict"]} for r in rows])  # nothing to check by
    assert code == 2 and not out.exists()
    one_line_error(capsys, "line 1", 'has no "prompt"')


CSV_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Target\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ((CSV_HEADER + "1,Hi,A,joy,positive,0,0,你好吗我的朋友\n2,Ho,B,joy,positive,0,1,今天天气很好\n").encode("gbk")
         + "3,Ha,A,joy,positive,0,2,我们去公园散步吧\n".encode(), "line 4: is UTF-8 but line 2 is GBK"),
        ((CSV_HEADER + "1,Hi,A,joy,positive,0,0,你好吗我的朋友\n").encode("utf-8")
         + "2,Ho,B,joy,positive,0,1,今天天气很好\n".encode("gbk") + (CSV_HEADER[:0] + "3,Ha,A,joy,positive,0,2,走吧朋友\n").encode("utf-8"),
         "line 3: is GBK but line 2 is UTF-8"),
        ((CSV_HEADER + "1,Hi,A,joy,positive,0,0,你好\n").encode("utf-8")[:-2], "line 2: ends in the middle of a character"),
        ((CSV_HEADER + "1,Hi,A,joy,positive,0,0,你好\n").encode("gbk")[:-2], "line 2: ends in the middle of a character"),
    ],
    ids=["utf8-rows-appended-to-gbk", "gbk-row-in-utf8", "utf8-cut-mid-character", "gbk-cut-mid-character"],
)
def test_one_encoding_per_file(content, message, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_bytes(content)
    assert main(["prepare", "--test", str(path), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"{path}: {message}")
    assert not (tmp_path / "out").exists()


def write_runs(tmp_path, rows_a, rows_b):
    paths = []
    for name, rows in (("a.jsonl", rows_a), ("b.jsonl", rows_b)):
        path = tmp_path / name
        lines = [{"id": i, "label": max(p, key=p.get), "probs": p} for i, p in zip(IDS, rows)]
        path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        paths.append(str(path))
    return paths


def distribution(top: str, mass: float = 0.7) -> dict:
    return {label: mass if label == top else (1 - mass) / 6 for label in LABELS}


def test_huge_weights_do_not_overflow(tmp_path):
    runs = write_runs(tmp_path, [distribution("Sad"), distribution("Fear")], [distribution("Sad"), distribution("Anger")])
    equal, huge = tmp_path / "equal.jsonl", tmp_path / "huge.jsonl"
    assert main(["ensemble", "--predictions", *runs, "--out", str(equal)]) == 0
    assert main(["ensemble", "--predictions", *runs, "--weights", "1e308", "1e308", "--out", str(huge)]) == 0
    assert {k: p.label for k, p in read_predictions(huge).items()} == {"d1_1": "Sad", "d1_2": "Anger"}
    assert read_predictions(huge) == read_predictions(equal)


@pytest.mark.parametrize(
    ("weights", "message"),
    [(["1", "0"], "finite positive"), (["1", "inf"], "finite positive"), (["1"], "1 weights for 2")],
)
def test_bad_weights_are_refused(weights, message, tmp_path, capsys):
    runs = write_runs(tmp_path, [distribution("Sad")] * 2, [distribution("Sad")] * 2)
    assert main(["ensemble", "--predictions", *runs, "--weights", *weights, "--out", str(tmp_path / "o.jsonl")]) == 2
    one_line_error(capsys, "--weights", message)
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("probs", "message"),
    [({label: 0.0 for label in LABELS}, '"probs" sum to 0, not 1'),
     ({label: 0.5 for label in LABELS}, '"probs" sum to 3.5, not 1')],
    ids=["all-zero", "sum-3.5"],
)
@pytest.mark.parametrize("command", ["ensemble", "calibrate"])
def test_probabilities_must_sum_to_one(command, probs, message, tmp_path, capsys):
    runs = write_runs(tmp_path, [distribution("Sad"), probs], [distribution("Sad")] * 2)
    raw = m3ed_file(tmp_path / "annotation_validation.json", {"d1": GOOD, "d2": [("A", "好", "Happy")]})
    out = tmp_path / "out.json"
    if command == "ensemble":
        argv = ["ensemble", "--predictions", *runs, "--out", str(out)]
    else:
        argv = ["calibrate", "--predictions", runs[0], "--validation", str(raw), "--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys, f"{runs[0]}: line 2 (id d1_2)", message)
    assert not out.exists()


# (a second predict into the same --out: tests/test_no_surprises.py, with the lock held by another process)


# --------------------------------------------------------------------- errors that name their file


def tfidf_model(tmp_path):
    model = tmp_path / "model"
    assert main(["train", "--config", TFIDF, f"out={model}", *NO_SPLITS]) == 0
    return model


def _model_record(tmp_path, text: str):
    model = tmp_path / "model"
    model.mkdir()
    (model / "erckit_model.json").write_text(text, encoding="utf-8")
    return model, model / "erckit_model.json"


def _truncated_tfidf(tmp_path):
    model = tfidf_model(tmp_path)
    vocabulary = model / "tfidf.json"
    vocabulary.write_bytes(vocabulary.read_bytes()[:100])
    return model, vocabulary


def _truncated_weights(tmp_path):
    model = tfidf_model(tmp_path)
    weights = model / "tfidf.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return model, weights


BAD_MODELS = {
    "tfidf-weights-truncated": (_truncated_weights, "unreadable weights"),
    "record-is-a-list": (lambda t: _model_record(t, "[1, 2]"), 'expected an object with "type" and "config"'),
    "record-malformed": (lambda t: _model_record(t, '{"type": "tfidf", '), "malformed JSON"),
    "tfidf-json-truncated": (_truncated_tfidf, "malformed JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_a_broken_model_folder_names_the_broken_file(case, tmp_path, capsys):
    build, message = BAD_MODELS[case]
    model, broken = build(tmp_path)
    out = tmp_path / "p.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(SAMPLE / "annotation_test.json"), "--out", str(out)]) == 2
    one_line_error(capsys, str(broken), message)
    assert not out.exists()


def test_an_adapter_config_without_peft_type_is_named(tmp_path, capsys):
    adapter = tmp_path / "run" / "checkpoint-10"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}', encoding="utf-8")
    validation = m3ed_file(tmp_path / "annotation_validation.json", {"d1": GOOD})
    assert main(["select", "--run", str(tmp_path / "run"), "--base", "nowhere/base", "--validation", str(validation)]) == 2
    one_line_error(capsys, str(adapter / "adapter_config.json"), 'no "peft_type"')
    assert main(["merge", "--base", "nowhere/base", "--adapter", str(adapter), "--out", str(tmp_path / "merged")]) == 2
    one_line_error(capsys, str(adapter / "adapter_config.json"), 'no "peft_type"')
    assert not (tmp_path / "merged").exists()


def test_more_inputs_that_once_gave_misleading_or_unnamed_errors(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_bytes("model: tfidf\n# 注释\n".encode("gbk"))
    assert main(["train", "--config", str(recipe)]) == 2
    one_line_error(capsys, f"{recipe}: line 2, byte 17: is not utf-8 text")  # the one reader's words

    listed = tmp_path / "list.json"
    listed.write_text('[{"id": "u1", "instruction": "x"}]', encoding="utf-8")
    assert main(["prepare", "--test", str(listed), "--out", str(tmp_path / "out")]) == 2
    one_line_error(capsys, f"{listed}: is a JSON list")

    one = m3ed_file(tmp_path / "annotation_validation.json", {"d1": GOOD})
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction(i, "Happy", distribution("Happy")) for i in IDS])
    assert main(["calibrate", "--predictions", str(preds), "--validation", str(one)]) == 2
    one_line_error(capsys, f"{one}: holds one dialogue")


def test_combine_keeps_a_csvs_line_endings_and_bom(tmp_path):
    header = "Sr No.,Utterance,Speaker,Emotion,Dialogue_ID,Utterance_ID\n"
    text = header + '1,"two\r\nlines",A,,0,0\n2,Hi,B,,0,1\n'
    raw = tmp_path / "test.csv"
    raw.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    preds = tmp_path / "p.jsonl"
    write_predictions(preds, [Prediction("dia0_utt0", "Happy"), Prediction("dia0_utt1", "Sad")])
    out = tmp_path / "test_label.csv"
    assert main(["combine", "--predictions", str(preds), "--raw", str(raw), "--out", str(out)]) == 0
    expected = text.replace("A,,", "A,joy,").replace("B,,", "B,sadness,")
    assert out.read_bytes() == b"\xef\xbb\xbf" + expected.encode("utf-8")


def test_probabilities_of_a_real_ensemble_still_sum_to_one(tmp_path):
    rng = np.random.default_rng(0)
    rows = [dict(zip(LABELS, rng.dirichlet(np.ones(len(LABELS))).round(6))) for _ in IDS]
    runs = write_runs(tmp_path, rows, rows[::-1])
    assert main(["ensemble", "--predictions", *runs, "--out", str(tmp_path / "e.jsonl")]) == 0
    for prediction in read_predictions(tmp_path / "e.jsonl").values():
        assert abs(sum(prediction.probs.values()) - 1) < 1e-5


def test_compare_does_not_reuse_a_method_whose_training_file_changed(tmp_path, capsys):
    train = tmp_path / "annotation_train.json"
    shutil.copy(SAMPLE / "annotation_train.json", train)
    config = tmp_path / "compare.yaml"
    config.write_text(f"out: {tmp_path / 'cmp'}\ntrain: {train}\nvalidation: {SAMPLE / 'annotation_validation.json'}\n"
                      f"methods:\n  tfidf: {{recipe: {TFIDF}}}\n", encoding="utf-8")
    assert main(["compare", "--config", str(config)]) == 0
    data = json.loads(train.read_text(encoding="utf-8"))
    show = next(iter(data))
    del data[show][next(iter(data[show]))]
    train.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    capsys.readouterr()
    assert main(["compare", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert "reusing" not in captured.out and "trained on other data" in captured.err
