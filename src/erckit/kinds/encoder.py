"""`model: bert_bigru`: a pretrained utterance encoder under a BiGRU over the dialogue (erckit.encoder)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from erckit.config import ConfigError, RunConfig
from erckit.data import Dialogue
from erckit.kinds import DATA
from erckit.predictor import Predictor, offsets_of

NAME = "bert_bigru"
READS = {"data": DATA, "encoder": None, "classifier": None, "train": None}
ENGINES = False
BEST_SO_FAR = True  # an unfinished run predicts with its best epoch so far
REPORTERS = ("tensorboard",)  # report_to: erckit.tracking writes each epoch


def outputs() -> tuple[str, ...]:
    """The files its training writes at the top of a run folder."""
    from erckit.encoder.model import WEIGHTS
    from erckit.plots import TRAINING_PLOT

    return WEIGHTS, TRAINING_PLOT


def resumable(folder: Path) -> bool:
    """Whether an unfinished run left a checkpoint to resume from."""
    from erckit.encoder.train import CHECKPOINT, PROGRESS

    return (folder / CHECKPOINT / PROGRESS).exists()


def check(config: RunConfig) -> None:
    """A training recipe (one that names its data) with early stopping needs validation data."""
    if config.train.patience and config.data.train is not None and config.data.validation is None:
        raise ConfigError("train.patience (early stopping) needs data.validation; give one, or set train.patience=0")


def check_sources(config: RunConfig) -> None:
    """The encoder can be found, and has at least `freeze_layers` layers (read from a local folder's config)."""
    from erckit.cache import check_source
    from erckit.encoder.packaged import PACKAGED_ENCODER_NAME, resolve_encoder
    from erckit.formats.encoding import read_json

    check_source(config.encoder.name, "encoder.name", (PACKAGED_ENCODER_NAME, "packaged"))
    local = Path(resolve_encoder(config.encoder.name)) / "config.json"
    settings = read_json(local, "settings") if local.is_file() else None
    layers = settings.get("num_hidden_layers") if isinstance(settings, dict) else None
    if isinstance(layers, int) and config.encoder.freeze_layers > layers:
        raise ConfigError(f"encoder.freeze_layers is {config.encoder.freeze_layers}, more than the {layers} layers of "
                          f"{config.encoder.name}; set {layers} or less ({layers}: the encoder frozen whole)")


def train(config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path) -> dict:
    from erckit.encoder.train import train_bert_bigru

    state = train_bert_bigru(config, train, validation, out)
    summary = {k: state[k] for k in ("best_epoch", "best_macro_f1", "train_seconds", "history", "stopped_early")}
    summary["epochs_run"] = state["epoch"]
    return summary


def load(folder: Path, config: RunConfig, info: dict, trust_remote_code: bool) -> Predictor:
    """The classifier in `folder`: its best epoch (the best so far, in an unfinished run)."""
    from erckit.encoder.model import load_classifier, predict_probabilities
    from erckit.remote_code import check_trusted

    check_trusted([folder], trust_remote_code)  # before the folder's encoder is loaded
    encoder = replace(config.encoder, trust_remote_code=trust_remote_code)  # the user's word, not the folder's
    model, tokenizer = load_classifier(folder, encoder, config.classifier)
    return Predictor(folder, NAME, lambda dialogues, progress: predict_probabilities(
        model, tokenizer, dialogues, config.encoder, progress=progress), offsets_of(info))


def unfinished_epoch(folder: Path, info: dict) -> dict:
    """The epoch the weights of an unfinished run come from, its validation score, epochs run and the cap."""
    from erckit.encoder.train import best_so_far

    return best_so_far(folder) | {"epochs": info["config"]["train"]["epochs"]}
