"""Tracking: `report_to: [tensorboard]` writes TensorBoard event files that read back as the run's curves."""

import json

import pytest

from conftest import SAMPLE_DATA
from erckit import recipes
from erckit.cli import main
from erckit.config import ConfigError, load_config
from erckit.models import train
from erckit.tracking import read_scalars
from test_encoder_model import tiny_encoder  # noqa: F401  (fixture)
from test_llm_train import recipe, setup  # noqa: F401  (fixture)


def encoder_run(out, encoder, *extra):
    return ["train", "--config", "bert_bigru", "--out", str(out), *SAMPLE_DATA, 
            f"encoder.name={encoder}", "encoder.freeze_layers=2", "train.epochs=2", "classifier.gru_hidden=16", *extra]


def test_the_encoders_epochs_read_back_from_its_tensorboard_files(tmp_path, tiny_encoder):  # noqa: F811
    out = tmp_path / "model"
    assert main(encoder_run(out, tiny_encoder, "report_to=[tensorboard]")) == 0
    history = json.loads((out / "erckit_model.json").read_text())["summary"]["history"]
    scalars = read_scalars(out)
    assert set(scalars) == {"train/loss", "eval/macro_f1", "eval/weighted_f1"}
    for tag, key in (("train/loss", "train_loss"), ("eval/macro_f1", "val_macro_f1"),
                     ("eval/weighted_f1", "val_weighted_f1")):
        assert [step for step, _ in scalars[tag]] == [1, 2]
        assert [value for _, value in scalars[tag]] == pytest.approx([h[key] for h in history], rel=1e-6)


def test_tracking_is_off_by_default_in_every_shipped_recipe():
    assert all(load_config(name).report_to == [] for name in recipes.names())  # test_serve: no runs/ written


@pytest.mark.needs_data
def test_the_llm_trainer_reports_to_tensorboard(setup, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    history = train(recipe(setup, out, "llm.max_steps=8", "llm.eval_steps=4", "report_to=[tensorboard]"))["summary"]["history"]
    scalars = read_scalars(out)
    for tag, key in (("train/loss", "loss"), ("eval/macro_f1", "eval_macro_f1")):  # what the run itself recorded
        assert scalars[tag] == [(h["step"], pytest.approx(h[key], rel=1e-6)) for h in history if key in h], tag
        assert [step for step, _ in scalars[tag]] == [4, 8]


@pytest.mark.parametrize("model, value, problem", [
    ("tfidf", "[tensorboard]", "a tfidf run has nothing to track"),
    ("bert_bigru", "[wandb]", "report_to must be a list of tensorboard"),
    ("llm", "[visdom]", "tensorboard, wandb, mlflow"),
    ("llm", "tensorboard", "expected a list"),
])
def test_unknown_trackers_are_refused(model, value, problem):
    with pytest.raises(ConfigError, match=problem):
        load_config(None, [f"model={model}", f"report_to={value}"])
