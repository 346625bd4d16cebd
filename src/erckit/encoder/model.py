"""Encoder + BiGRU: each utterance embedded by a pretrained encoder, a BiGRU across the dialogue, a linear head.

One forward pass labels every utterance of a batch of dialogues.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from erckit.atomic import atomic_path
from erckit.config import ClassifierConfig, EncoderConfig
from erckit.data import DataError, Dialogue, speaker_letters
from erckit.encoder.packaged import resolve_encoder
from erckit.labels import LABELS

WEIGHTS = "model.safetensors"
_NO_POOLER = ("bert", "xlm-roberta", "roberta")  # the pooler is unused here; e5 ships none


def _no_pooler(model_type: str) -> dict:
    return {"add_pooling_layer": False} if model_type in _NO_POOLER else {}


class DialogueClassifier(nn.Module):
    """Mean-pooled utterance vectors -> BiGRU over the dialogue -> [vector; context] -> label logits."""

    def __init__(self, encoder: PreTrainedModel, config: ClassifierConfig) -> None:
        super().__init__()
        self.encoder = encoder
        hidden = encoder.config.hidden_size
        self.gru = nn.GRU(hidden, config.gru_hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden + 2 * config.gru_hidden, len(LABELS))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        """Logits [utterances, 7] for the concatenated utterances of dialogues of `lengths`."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        padded = pad_sequence(list(vectors.split(lengths)), batch_first=True)
        packed = pack_padded_sequence(padded, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        context, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True)
        context = torch.cat([c[:n] for c, n in zip(context, lengths, strict=True)])
        return self.head(self.dropout(torch.cat([vectors, context], dim=-1)))


def utterance_texts(dialogue: Dialogue, speaker: str) -> list[str]:
    """Encoder inputs: e5's "query: " prefix, the speaker (name, letter or none), the text."""
    letters = speaker_letters(dialogue)
    texts = []
    for utt in dialogue.utterances:
        who = {"name": utt.speaker, "letter": letters[utt.speaker], "none": ""}[speaker]
        texts.append(f"query: {who}: {utt.text}" if who else f"query: {utt.text}")
    return texts


def encode_batch(
    tokenizer: PreTrainedTokenizerBase, dialogues: list[Dialogue], config: EncoderConfig
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Tokenised utterances of `dialogues` (padded to the longest) and the dialogue lengths."""
    texts = [t for d in dialogues for t in utterance_texts(d, config.speaker)]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=config.max_length, return_tensors="pt")
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, [len(d) for d in dialogues]


def load_pretrained(config: EncoderConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The encoder and tokenizer named by the config (packaged, local folder or hub id)."""
    source = resolve_encoder(config.name)
    model_type = AutoConfig.from_pretrained(source, trust_remote_code=config.trust_remote_code).model_type
    encoder = AutoModel.from_pretrained(source, trust_remote_code=config.trust_remote_code, **_no_pooler(model_type))
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    return encoder, tokenizer


def freeze(model: DialogueClassifier, config: EncoderConfig) -> None:
    """Freeze the word embeddings, and with `freeze_layers` > 0 all embeddings and the lowest layers."""
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().requires_grad_(False)
    if config.freeze_layers:
        layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
        if layers is None:
            raise ValueError(f"freeze_layers: {type(model.encoder).__name__} has no encoder.layer list")
        model.encoder.embeddings.requires_grad_(False)
        for layer in layers[: config.freeze_layers]:
            layer.requires_grad_(False)


@torch.inference_mode()
def predict_probabilities(
    model: DialogueClassifier,
    tokenizer: PreTrainedTokenizerBase,
    dialogues: list[Dialogue],
    config: EncoderConfig,
    *,
    batch_dialogues: int = 8,
    progress: bool = True,
) -> np.ndarray:
    """[utterances, 7] label probabilities in file order."""
    model.eval()
    out = []
    with tqdm(total=sum(len(d) for d in dialogues), unit="utt", desc="predict", disable=not progress) as bar:
        for start in range(0, len(dialogues), batch_dialogues):
            chunk = dialogues[start : start + batch_dialogues]
            inputs, lengths = encode_batch(tokenizer, chunk, config)
            out.append(torch.softmax(model(**inputs, lengths=lengths).float(), dim=-1).numpy())
            bar.update(sum(lengths))
    return np.concatenate(out) if out else np.zeros((0, len(LABELS)))


def save_classifier(
    model: DialogueClassifier, tokenizer: PreTrainedTokenizerBase, folder: Path, epoch: int | None = None
) -> None:
    """Weights (safetensors, with the epoch they come from), the encoder's config and the tokenizer:
    a self-contained folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "encoder")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata=None if epoch is None else {"epoch": str(epoch)})


def saved_epoch(folder: Path) -> int | None:
    """The training epoch whose weights `folder` holds (None when not recorded)."""
    with safe_open(str(folder / WEIGHTS), framework="pt") as weights:
        epoch = (weights.metadata() or {}).get("epoch")
    return None if epoch is None else int(epoch)


def load_classifier(folder: Path, encoder_config: EncoderConfig, classifier_config: ClassifierConfig):
    """A saved DialogueClassifier and its tokenizer; no network, no cache needed."""
    source = folder / "encoder"
    config = AutoConfig.from_pretrained(source, trust_remote_code=encoder_config.trust_remote_code)
    encoder = AutoModel.from_config(
        config, trust_remote_code=encoder_config.trust_remote_code, **_no_pooler(config.model_type)
    )
    model = DialogueClassifier(encoder, classifier_config)
    try:
        weights = load_file(str(folder / WEIGHTS))
    except SafetensorError as err:
        raise DataError(folder / WEIGHTS, None, f"unreadable weights ({err}): retrain the model") from None
    model.load_state_dict(weights)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=encoder_config.trust_remote_code)
    return model.eval(), tokenizer


