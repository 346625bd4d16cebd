"""Training the encoder + BiGRU model: class-weighted loss, best epoch by validation macro-F1, early stopping
(`train.patience`), resumable."""

from __future__ import annotations

import contextlib
import json
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from erckit.atomic import write_safetensors, write_text_atomic
from erckit.config import RunConfig
from erckit.data import Dialogue, iter_utterances
from erckit.encoder.averaging import WeightAverage
from erckit.encoder.model import (
    WEIGHTS,
    DialogueClassifier,
    check_positions,
    encode_batch,
    freeze,
    load_pretrained,
    predict_probabilities,
    save_classifier,
    saved_epoch,
)
from erckit.formats.encoding import check_file, read_json
from erckit.labels import LABELS
from erckit.labels import class_weights as label_weights
from erckit.metrics import scores
from erckit.plots import TRAINING_PLOT, plot_training
from erckit.tracking import log_epoch

CHECKPOINT = "checkpoint"
STATE = "state.safetensors"  # the checkpoint: weights, optimizer and progress in one file, written atomically
PROGRESS = "trainer_state.json"  # the progress alone, for readers (best_so_far), written after an epoch's weights


def class_weights(dialogues: list[Dialogue], power: float) -> torch.Tensor:
    """Loss weights in LABELS order (`erckit.labels.class_weights`)."""
    weights = label_weights((u.label for u in iter_utterances(dialogues)), power)
    return torch.tensor([weights[label] for label in LABELS], dtype=torch.float)


def _batches(dialogues: list[Dialogue], size: int, seed: int) -> list[list[Dialogue]]:
    order = list(dialogues)
    random.Random(seed).shuffle(order)
    return [order[i : i + size] for i in range(0, len(order), size)]


def _save_checkpoint(folder: Path, model, optimizer, average: WeightAverage | None, state: dict) -> None:
    """Model, optimizer and weight-average state with the progress in its metadata: one file, so a kill leaves the
    last one whole."""
    folder.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    tensors |= average.state() if average else {}
    for index, slots in opt["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{index}.{key}"] = torch.as_tensor(value).contiguous()
    progress = json.dumps({**state, "param_groups": opt["param_groups"]})
    write_safetensors(save_file, tensors, folder / STATE, {"progress": progress})


def _load_checkpoint(folder: Path, model, optimizer, average: WeightAverage | None) -> dict:
    check_file(folder / STATE)
    with safe_open(str(folder / STATE), framework="pt") as saved:
        progress = (saved.metadata() or {}).get("progress")
    # a checkpoint of an earlier erckit keeps its progress in the JSON alone
    state = json.loads(progress) if progress is not None else read_json(folder / PROGRESS, "settings")
    tensors = load_file(str(folder / STATE))
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            slots.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": state.pop("param_groups")})
    if average:
        average.load(tensors)
    return state


def train_bert_bigru(config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path) -> dict:
    """Train, keep the epoch with the best validation macro-F1 in `out`, and return the history.

    A killed run started again with the same command resumes after its last finished epoch.
    """
    recipe = config.train
    torch.manual_seed(recipe.seed)
    encoder, tokenizer = load_pretrained(config.encoder)
    check_positions(encoder, config.encoder)
    model = DialogueClassifier(encoder, config.classifier)
    freeze(model, config.encoder)
    head = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("encoder.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("encoder.")]
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": recipe.lr}, {"params": head, "lr": recipe.head_lr}], weight_decay=recipe.weight_decay
    )
    steps_per_epoch = -(-len(train) // recipe.batch_dialogues)
    total = steps_per_epoch * recipe.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(recipe.warmup_ratio * total), total)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=class_weights(train, recipe.class_weight_power), label_smoothing=recipe.label_smoothing
    )
    average = WeightAverage([*body, *head], recipe.ema) if recipe.ema else None
    kept = average.applied if average else contextlib.nullcontext  # the weights validated and saved

    state = {"epoch": 0, "best_macro_f1": -1.0, "best_epoch": 0, "history": [], "train_seconds": 0.0}
    checkpoint = out / CHECKPOINT
    if (ended := _ended(out)) is not None:  # killed after the last epoch, before the run was recorded finished
        print(f"{out}: all {ended['epoch']} epochs were run; nothing left to train")
        return ended
    if (checkpoint / STATE).exists():
        state = _load_checkpoint(checkpoint, model, optimizer, average)
        with warnings.catch_warnings():  # the schedule is fast-forwarded on purpose, before the next optimiser step
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            for _ in range(state["epoch"] * steps_per_epoch):
                scheduler.step()
        if state["best_epoch"] == state["epoch"] and _weights_epoch(out) != state["epoch"]:
            with kept():
                save_classifier(model, tokenizer, out, state["epoch"])  # killed before the best epoch's weights were kept
        print(f"resuming {out} after epoch {state['epoch']}")

    for epoch in range(state["epoch"] + 1, recipe.epochs + 1):
        if _patience_spent(state, recipe.patience):
            break
        model.train()
        torch.manual_seed(recipe.seed + epoch)
        started, losses = time.perf_counter(), []
        batches = _batches(train, recipe.batch_dialogues, recipe.seed + epoch)
        with tqdm(batches, desc=f"epoch {epoch}/{recipe.epochs}", unit="batch") as bar:
            for batch in bar:
                inputs, lengths = encode_batch(tokenizer, batch, config.encoder)
                gold = torch.tensor([LABELS.index(u.label) for u in iter_utterances(batch)])
                loss = loss_fn(model(**inputs, lengths=lengths), gold)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_([*body, *head], 1.0)
                optimizer.step()
                scheduler.step()
                if average:
                    average.update()
                losses.append(loss.item())
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        record = {"epoch": epoch, "train_loss": float(np.mean(losses))}
        state["train_seconds"] += time.perf_counter() - started
        if validation:
            with kept():
                probs = predict_probabilities(model, tokenizer, validation, config.encoder, progress=False)
            result = scores([u.label for u in iter_utterances(validation)], [LABELS[i] for i in probs.argmax(1)])
            record |= {"val_macro_f1": result["macro_f1"], "val_weighted_f1": result["weighted_f1"]}
        print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k != "epoch"))
        improved = not validation or record["val_macro_f1"] > state["best_macro_f1"]  # without one: the last epoch
        if improved:
            state["best_macro_f1"], state["best_epoch"] = record.get("val_macro_f1"), epoch
        state["epoch"] = epoch
        state["history"].append(record)
        _save_checkpoint(checkpoint, model, optimizer, average, state)  # first: it holds this epoch's weights too
        if improved:
            with kept():
                save_classifier(model, tokenizer, out, epoch)
        write_text_atomic(checkpoint / PROGRESS, json.dumps(state, indent=1))  # last: readers see a whole epoch
        log_epoch(out, config.report_to, record)  # TensorBoard, if the recipe reports to it
        plot_training(
            out / TRAINING_PLOT, "epoch", [(h["epoch"], h["train_loss"]) for h in state["history"]],
            {f"validation {k[4:].replace('_', '-')}": [(h["epoch"], h[k]) for h in state["history"] if k in h]
             for k in ("val_macro_f1", "val_weighted_f1")},
        )
    state["stopped_early"] = state["epoch"] < recipe.epochs
    if state["stopped_early"]:
        print(f"early stopping after epoch {state['epoch']} of {recipe.epochs}: no higher validation macro-F1 "
              f"in {recipe.patience} epochs (best epoch {state['best_epoch']}, {state['best_macro_f1']:.4f})")
    write_text_atomic(checkpoint / PROGRESS, json.dumps(state | {"finished": True}, indent=1))
    (checkpoint / STATE).unlink()  # finished: the best model is in `out`
    return state


def _weights_epoch(out: Path) -> int | None:
    """The epoch of the best weights kept in `out`, None when there are none."""
    return saved_epoch(out) if (out / WEIGHTS).is_file() else None


def _ended(out: Path) -> dict | None:
    """The progress of a run whose epochs have all been run (its best weights kept), else None."""
    path = out / CHECKPOINT / PROGRESS
    if not path.is_file() or (out / CHECKPOINT / STATE).exists():
        return None
    state = read_json(path, "settings")
    if not (isinstance(state, dict) and state.get("finished")) or _weights_epoch(out) != state.get("best_epoch"):
        return None
    return {k: v for k, v in state.items() if k != "finished"}


def best_so_far(out: Path) -> dict:
    """Which epoch the weights of an unfinished run in `out` come from: epoch, its validation scores,
    epochs run so far and the cap. Raises ValueError when no epoch has finished yet."""
    if not (out / WEIGHTS).is_file():
        raise ValueError(f"{out}: no epoch has finished yet; nothing to predict with")
    path = out / CHECKPOINT / PROGRESS
    state = read_json(path, "settings") if path.exists() else {"history": [], "epoch": 0, "best_epoch": None}
    epoch = saved_epoch(out) or state["best_epoch"]  # runs trained before epochs were recorded: the checkpoint's
    record = next((h for h in state["history"] if h["epoch"] == epoch), {})
    return {"epoch": epoch, "val_macro_f1": record.get("val_macro_f1"), "epochs_run": state["epoch"]}


def _patience_spent(state: dict, patience: int) -> bool:
    """Early stopping: `patience` epochs have passed since the best validation macro-F1."""
    return patience > 0 and state["epoch"] - state["best_epoch"] >= patience
