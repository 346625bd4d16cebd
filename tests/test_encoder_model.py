"""The encoder + BiGRU model on a tiny in-process encoder (real tokenizer, real BMELD slices)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from conftest import BMELD, SAMPLE, SAMPLE_DATA
from erckit.cli import main
from erckit.config import ClassifierConfig, EncoderConfig, load_config
from erckit.encoder.model import DialogueClassifier, load_classifier, predict_probabilities, save_classifier
from erckit.encoder.packaged import tokenizer_json
from erckit.formats import read_dialogues
from erckit.formats.jsonl import dump
from erckit.metrics import scores
from erckit.models import train


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide BERT with the real multilingual-e5 tokenizer, saved as a local HF folder."""
    folder = tmp_path_factory.mktemp("tiny-encoder")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json()),
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", cls_token="<s>", sep_token="</s>",
        mask_token="<mask>",
    )
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, pad_token_id=tokenizer.pad_token_id)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bmeld_slices(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("bmeld")
    train_path, dev_path = folder / "train.jsonl", folder / "dev.jsonl"
    train_path.write_text(dump(read_dialogues(BMELD / "train_sent_emo.csv")[:48]), encoding="utf-8")
    dev_path.write_text(dump(read_dialogues(BMELD / "dev_sent_emo.csv")[:12]), encoding="utf-8")
    return train_path, dev_path


SAMPLE_PATHS = SAMPLE / "annotation_train.json", SAMPLE / "annotation_validation.json"


def recipe(tiny_encoder: Path, train_path: Path, dev_path: Path, out: Path, epochs: int) -> list[str]:
    return [
        f"data.train={train_path}", f"data.validation={dev_path}", f"out={out}",
        f"encoder.name={tiny_encoder}", "encoder.freeze_embeddings=false", "encoder.max_length=32",
        "encoder.freeze_layers=2",  # the tiny encoder's two layers frozen: the BiGRU and head train
        "classifier.gru_hidden=32", "train.lr=1e-3", "train.head_lr=3e-3", "train.batch_dialogues=8",
        f"train.epochs={epochs}",
    ]


@pytest.mark.integration
@pytest.mark.needs_data
def test_loss_falls_on_real_bmeld_and_best_epoch_is_kept(tiny_encoder, bmeld_slices, tmp_path):
    config = load_config("bert_bigru", recipe(tiny_encoder, *bmeld_slices, tmp_path / "m", 10))
    info = train(config)
    history = info["summary"]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"] - 0.1
    best = max(history, key=lambda h: h["val_macro_f1"])
    assert info["summary"]["best_epoch"] == best["epoch"]
    assert info["summary"]["best_macro_f1"] == pytest.approx(best["val_macro_f1"])
    assert (tmp_path / "m" / "training.png").exists() and not (tmp_path / "m" / "checkpoint" / "state.safetensors").exists()
    assert train(config)["summary"] == info["summary"]  # a finished run is reused, not redone


def test_save_load_gives_identical_predictions(tiny_encoder, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    encoder_config = EncoderConfig(name=str(tiny_encoder), max_length=32)
    classifier_config = ClassifierConfig(gru_hidden=16)
    torch.manual_seed(1)
    model = DialogueClassifier(AutoModel.from_pretrained(tiny_encoder, add_pooling_layer=False), classifier_config)
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder)
    dialogues = read_dialogues(SAMPLE / "annotation_test.json")
    before = predict_probabilities(model, tokenizer, dialogues, encoder_config, progress=False)
    save_classifier(model, tokenizer, tmp_path / "saved")
    loaded, loaded_tokenizer = load_classifier(tmp_path / "saved", encoder_config, classifier_config)
    after = predict_probabilities(loaded, loaded_tokenizer, dialogues, encoder_config, progress=False)
    assert before.shape == (96, 7)
    np.testing.assert_array_equal(before, after)


@pytest.mark.slow  # 28 s on 2 cores: CI runs it with -m slow
@pytest.mark.needs_data
def test_killed_run_resumes_after_its_last_epoch(tiny_encoder, bmeld_slices, tmp_path):
    out = tmp_path / "m"
    args = [sys.executable, "-m", "erckit", "train", "--config", "bert_bigru",
            *recipe(tiny_encoder, *bmeld_slices, out, 3)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = out / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.kill()
    process.wait()
    first = json.loads(state.read_text())
    assert first["epoch"] in (1, 2)
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert f"resuming {out} after epoch {first['epoch']}" in result.stdout
    info = json.loads((out / "erckit_model.json").read_text())
    history = info["summary"]["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[: first["epoch"]] == first["history"]


def test_a_run_killed_between_its_checkpoint_and_its_best_weights_resumes_and_keeps_them(
    tiny_encoder, tmp_path, monkeypatch, capsys
):
    import erckit.encoder.train as encoder_train
    from erckit.encoder.model import saved_epoch

    out = tmp_path / "m"
    args = ["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, out, 2)]

    def killed(*_args, **_kwargs):  # the kill lands right after epoch 1's checkpoint
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(encoder_train, "save_classifier", killed)
        assert main(args) == 130
    assert (out / "checkpoint" / "state.safetensors").exists() and not (out / "model.safetensors").exists()
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]  # the fast-forwarded schedule warns no user
    assert f"resuming {out} after epoch 1" in capsys.readouterr().out
    summary = json.loads((out / "erckit_model.json").read_text())["summary"]
    assert [h["epoch"] for h in summary["history"]] == [1, 2] and saved_epoch(out) == summary["best_epoch"]


def test_a_run_killed_after_its_last_epoch_is_not_trained_again(tiny_encoder, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, out, 2)]
    assert main(args) == 0
    info = json.loads((out / "erckit_model.json").read_text())
    weights = (out / "model.safetensors").read_bytes()
    (out / "erckit_model.json").write_text(json.dumps(info | {"finished": False}))  # killed before it said so
    capsys.readouterr()
    assert main(args) == 0
    assert "all 2 epochs were run; nothing left to train" in capsys.readouterr().out
    again = json.loads((out / "erckit_model.json").read_text())
    assert again["finished"] and again["summary"]["history"] == info["summary"]["history"]
    assert (out / "model.safetensors").read_bytes() == weights


def test_demo_steps_on_the_sample_from_the_cli(tiny_encoder, tmp_path):
    """The steps `make demo` runs (train -> predict -> combine -> evaluate), with a tiny encoder for speed."""
    model, preds = tmp_path / "model", tmp_path / "predictions.jsonl"
    overrides = [f"out={model}", *SAMPLE_DATA, f"encoder.name={tiny_encoder}", "encoder.freeze_layers=2", "train.epochs=1",
                 "classifier.gru_hidden=16"]
    assert main(["train", "--config", "bert_bigru", *overrides]) == 0
    test_file = SAMPLE / "annotation_test.json"
    assert main(["predict", "--model", str(model), "--input", str(test_file), "--out", str(preds)]) == 0
    lines = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 96 and all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in lines)
    assert main(["combine", "--predictions", str(preds), "--raw", str(test_file), "--out", str(tmp_path / "test_label.json")]) == 0
    predicted = {r["id"]: r["label"] for r in lines}
    written = read_dialogues(tmp_path / "test_label.json")  # the raw file with the predicted labels written in
    assert {u.id: u.label for d in written for u in d.utterances} == predicted
    assert main(["evaluate", "--predictions", str(preds), "--gold", str(test_file), "--out", str(tmp_path / "report")]) == 0
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    gold = [u for d in read_dialogues(test_file) for u in d.utterances]
    want = scores([u.label for u in gold], [predicted[u.id] for u in gold])
    assert metrics["n"] == 96 and metrics["macro_f1"] == pytest.approx(want["macro_f1"])
    assert metrics["weighted_f1"] == pytest.approx(want["weighted_f1"])


@pytest.mark.integration
@pytest.mark.needs_data
def test_early_stopping_stops_after_patience_epochs_without_a_better_validation_score(
    tiny_encoder, bmeld_slices, tmp_path, capsys
):
    """With learning rates of 1e-30 (nothing moves) the validation score never rises: patience 2 stops after epoch 3 of the cap 8."""
    out = tmp_path / "m"
    overrides = [*recipe(tiny_encoder, *bmeld_slices, out, 8), "train.lr=1e-30", "train.head_lr=1e-30", "train.patience=2"]
    assert main(["train", "--config", "bert_bigru", *overrides]) == 0
    printed = capsys.readouterr().out
    assert "early stopping after epoch 3 of 8" in printed and "best epoch 1:" in printed
    summary = json.loads((out / "erckit_model.json").read_text())["summary"]
    assert [h["epoch"] for h in summary["history"]] == [1, 2, 3]
    assert summary["epochs_run"] == 3 and summary["stopped_early"] and summary["best_epoch"] == 1
    assert len({h["val_macro_f1"] for h in summary["history"]}) == 1  # the premise: nothing was learnt
    from erckit.encoder.model import saved_epoch

    assert saved_epoch(out) == 1


@pytest.mark.integration
@pytest.mark.needs_data
def test_without_patience_every_epoch_runs(tiny_encoder, bmeld_slices, tmp_path):
    overrides = [*recipe(tiny_encoder, *bmeld_slices, tmp_path / "m", 3), "train.lr=1e-30", "train.head_lr=1e-30"]
    summary = train(load_config("bert_bigru", overrides))["summary"]
    assert summary["epochs_run"] == 3 and not summary["stopped_early"] and summary["best_epoch"] == 1


@pytest.mark.parametrize(("override", "problem"), [
    ("train.patience=-1", "train.patience must be 0"),
    ("data.validation=null", "train.patience (early stopping) needs data.validation"),
])
def test_bad_early_stopping_settings_are_refused_before_anything_is_written(
    tiny_encoder, tmp_path, capsys, override, problem
):
    out = tmp_path / "m"  # refused before any data is read: the bundled sample stands in
    overrides = [*recipe(tiny_encoder, SAMPLE / "annotation_train.json", SAMPLE / "annotation_validation.json", out, 3),
                 "train.patience=2", override]
    assert main(["train", "--config", "bert_bigru", *overrides]) == 2
    err = capsys.readouterr().err
    assert problem in err and len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.integration
@pytest.mark.needs_data
def test_a_killed_early_stopping_run_predicts_with_its_best_epoch_on_request_and_resumes(
    tiny_encoder, bmeld_slices, tmp_path, capsys
):
    out, preds = tmp_path / "m", tmp_path / "p.jsonl"
    args = ["train", "--config", "bert_bigru",
            *recipe(tiny_encoder, *bmeld_slices, out, 8), "train.lr=1e-30", "train.head_lr=1e-30", "train.patience=2"]
    process = subprocess.Popen([sys.executable, "-m", "erckit", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    state = out / "checkpoint" / "trainer_state.json"
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.kill()
    process.wait()
    epochs_run = json.loads(state.read_text())["epoch"]
    assert epochs_run in (1, 2)

    predict = ["predict", "--model", str(out), "--input", str(bmeld_slices[1]), "--out", str(preds)]
    assert main(predict) == 2
    assert "--best-so-far" in capsys.readouterr().err and not preds.exists()
    assert main([*predict, "--best-so-far"]) == 0
    printed = capsys.readouterr().out
    assert "unfinished run: predicted with its best epoch so far, epoch 1, validation macro-F1 " in printed
    assert f"({epochs_run} of 8 epochs run)" in printed
    assert len(preds.read_text().splitlines()) == sum(len(d) for d in read_dialogues(bmeld_slices[1]))

    assert main(args) == 0  # the same command resumes and stops early
    printed = capsys.readouterr().out
    assert f"resuming {out} after epoch {epochs_run}" in printed and "early stopping after epoch 3 of 8" in printed
    assert [h["epoch"] for h in json.loads((out / "erckit_model.json").read_text())["summary"]["history"]] == [1, 2, 3]
    assert main([*predict, "--best-so-far"]) == 0 and "unfinished" not in capsys.readouterr().out


def test_best_so_far_is_refused_for_an_unfinished_tfidf_run(tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["train", "--config", "tfidf", f"out={model}", *SAMPLE_DATA]) == 0
    info = json.loads((model / "erckit_model.json").read_text())
    (model / "erckit_model.json").write_text(json.dumps(info | {"finished": False}))
    capsys.readouterr()
    out = tmp_path / "p.jsonl"
    args = ["predict", "--model", str(model), "--input", str(SAMPLE / "annotation_test.json"), "--out", str(out)]
    assert main([*args, "--best-so-far"]) == 2
    err = capsys.readouterr().err
    assert "only bert_bigru runs" in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_without_validation_the_last_epoch_is_kept_and_no_score_is_invented(tiny_encoder, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, out, 2), "data.validation=null",
            "train.patience=0"]
    assert main(args) == 0
    assert "no validation set: the last epoch (2) is kept" in capsys.readouterr().out
    summary = json.loads((out / "erckit_model.json").read_text(encoding="utf-8"))["summary"]
    assert summary["best_epoch"] == 2 and summary["best_macro_f1"] is None
    assert all("val_macro_f1" not in epoch for epoch in summary["history"])


def test_freezing_more_layers_than_the_encoder_has_is_refused(tiny_encoder, tmp_path, capsys):
    layers = json.loads((tiny_encoder / "config.json").read_text())["num_hidden_layers"]
    args = ["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, tmp_path / "m", 1),
            f"encoder.freeze_layers={layers + 1}"]
    assert main(args) == 2
    assert (f"encoder.freeze_layers is {layers + 1}, more than the {layers} layers of {tiny_encoder}; set {layers} "
            "or less") in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # refused before the run folder is written


def test_the_weight_average_follows_its_decay_and_gives_the_raw_weights_back():
    from erckit.encoder.averaging import WeightAverage

    param = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    average = WeightAverage([param], 0.75)
    with torch.no_grad():
        param.copy_(torch.tensor([4.0, 2.0]))
    average.update()  # 0.75 · start + 0.25 · now
    with average.applied():
        assert param.tolist() == [1.0, 8.0]
    assert param.tolist() == [4.0, 2.0]
    restored = WeightAverage([torch.nn.Parameter(torch.zeros(2))], 0.75)
    restored.load(average.state())
    assert restored.average[0].tolist() == [1.0, 8.0]


def test_an_averaged_run_keeps_the_average_and_resumes_to_the_same_weights(tiny_encoder, tmp_path, monkeypatch):
    """train.ema: the kept weights are the average, not the raw weights; the checkpoint carries the average, so
    a run killed after epoch 1 and resumed ends with the weights of a run never stopped."""
    from safetensors.torch import load_file

    import erckit.encoder.train as encoder_train

    def run(out: Path, ema: str) -> dict[str, torch.Tensor]:
        assert main(["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, out, 2),
                     "train.patience=0", f"train.ema={ema}"]) == 0
        return load_file(str(out / "model.safetensors"))

    whole = run(tmp_path / "whole", "0.9")
    raw = run(tmp_path / "raw", "0")
    assert any(not torch.equal(whole[k], raw[k]) for k in whole)  # averaged weights are not the raw ones
    assert all(torch.equal(whole[k], raw[k]) for k in whole if k.startswith("encoder."))  # frozen: untouched

    out = tmp_path / "killed"
    real_log = encoder_train.log_epoch

    def killed_after_epoch_1(folder, report_to, record):
        real_log(folder, report_to, record)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(encoder_train, "log_epoch", killed_after_epoch_1)
        assert main(["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, out, 2),
                     "train.patience=0", "train.ema=0.9"]) == 130
    resumed = run(out, "0.9")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize("setting", ["train.ema=1.0", "train.ema=-0.1", "train.label_smoothing=1.0"])
def test_an_averaging_decay_or_label_smoothing_outside_0_to_1_is_refused(setting, tmp_path, capsys):
    assert main(["train", "--config", "bert_bigru", "data.train=x.json", f"--out={tmp_path / 'm'}", setting]) == 2
    assert setting.split("=")[0] in capsys.readouterr().err and not (tmp_path / "m").exists()


def test_label_smoothing_changes_what_is_learned(tiny_encoder, tmp_path):
    from safetensors.torch import load_file

    def head(smoothing: str) -> torch.Tensor:
        out = tmp_path / smoothing
        assert main(["train", "--config", "bert_bigru", *recipe(tiny_encoder, *SAMPLE_PATHS, out, 1),
                     f"train.label_smoothing={smoothing}"]) == 0
        return load_file(str(out / "model.safetensors"))["head.weight"]

    assert not torch.equal(head("0"), head("0.3"))
