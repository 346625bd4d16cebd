"""Encoder + BiGRU: utterance vectors from a pretrained encoder, a BiGRU across the dialogue, a linear head.

Two ways to read a dialogue (`encoder.context`):
  utterance  each utterance is encoded alone ("query: A: text"), its tokens mean-pooled;
  dialogue   the dialogue's turns go through the encoder together ("query: A: text </s> B: text </s> ..."),
             so the words of one turn attend to the others; each utterance's vector is the mean of its own
             tokens in that shared pass. A dialogue longer than `encoder.dialogue_tokens` is cut into
             overlapping chunks, each utterance pooled from the chunk that gives it context on both sides.
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
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from erckit.atomic import write_safetensors
from erckit.chunks import chunks
from erckit.config import ClassifierConfig, ConfigError, EncoderConfig
from erckit.data import DataError, Dialogue, speaker_letters
from erckit.encoder.packaged import resolve_encoder
from erckit.formats.encoding import check_file
from erckit.labels import LABELS
from erckit.progress import bar

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

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pool: torch.Tensor, lengths: list[int]
    ) -> torch.Tensor:
        """Logits [utterances, 7] for the utterances of dialogues of `lengths`; `pool` [utterances, rows * tokens]
        averages each utterance's own tokens (see `encode_batch`)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        vectors = pool.to(hidden.dtype) @ hidden.flatten(0, 1)
        padded = pad_sequence(list(vectors.split(lengths)), batch_first=True)
        packed = pack_padded_sequence(padded, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
        context, _ = pad_packed_sequence(self.gru(packed)[0], batch_first=True)
        context = torch.cat([c[:n] for c, n in zip(context, lengths, strict=True)])
        return self.head(self.dropout(torch.cat([vectors, context], dim=-1)))


def utterance_texts(dialogue: Dialogue, speaker: str) -> list[str]:
    """Each turn as the encoder reads it: the speaker (name, letter or none), then the text."""
    letters = speaker_letters(dialogue)
    texts = []
    for utt in dialogue.utterances:
        who = {"name": utt.speaker, "letter": letters[utt.speaker], "none": ""}[speaker]
        texts.append(f"{who}: {utt.text}" if who else utt.text)
    return texts


def _utterance_rows(tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int) -> list[tuple[list[int], list[range]]]:
    """context: utterance — one row per turn, <s> query: turn </s>, all its tokens pooled."""
    rows = tokenizer([f"query: {text}" for text in texts], truncation=True, max_length=max_length)["input_ids"]
    return [(ids, [range(len(ids))]) for ids in rows]


def _dialogue_rows(
    tokenizer: PreTrainedTokenizerBase, turns: list[list[int]], budget: int
) -> list[tuple[list[int], list[range]]]:
    """context: dialogue — the turns together: <s> query: turn </s> turn </s> ..., cut into chunks of `budget`
    tokens; each row lists the token ranges of the turns it owns."""
    prefix = [tokenizer.cls_token_id, *tokenizer("query:", add_special_tokens=False)["input_ids"]]
    lengths = [len(ids) + 1 for ids in turns]  # each turn ends with </s>
    rows = []
    for first, end, own, own_end in chunks(lengths, budget - len(prefix), "centered"):
        row, spans = list(prefix), []
        for index in range(first, end):
            if own <= index < own_end:
                spans.append(range(len(row), len(row) + len(turns[index])))
            row += [*turns[index], tokenizer.sep_token_id]
        rows.append((row, spans))
    return rows


def encode_batch(
    tokenizer: PreTrainedTokenizerBase, dialogues: list[Dialogue], config: EncoderConfig
) -> tuple[dict[str, torch.Tensor], list[int]]:
    """The model's inputs for `dialogues` (rows padded to the longest, and the `pool` matrix that averages each
    utterance's own tokens, in file order) and the dialogue lengths."""
    texts = [t for d in dialogues for t in utterance_texts(d, config.speaker)]
    if config.context == "dialogue":
        turns = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=config.max_length)["input_ids"]
        rows, start = [], 0
        for dialogue in dialogues:
            rows += _dialogue_rows(tokenizer, turns[start : start + len(dialogue)], config.dialogue_tokens)
            start += len(dialogue)
    else:
        rows = _utterance_rows(tokenizer, texts, config.max_length)
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    pool = torch.zeros((len(texts), len(rows) * width))
    utterance = 0
    for r, (ids, spans) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention_mask[r, : len(ids)] = 1
        for span in spans:
            pool[utterance, r * width + span.start : r * width + span.stop] = 1.0 / max(len(span), 1)
            utterance += 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pool": pool}, [len(d) for d in dialogues]


def load_pretrained(config: EncoderConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The encoder and tokenizer named by the config (packaged, local folder or hub id)."""
    source = resolve_encoder(config.name)
    model_type = AutoConfig.from_pretrained(source, trust_remote_code=config.trust_remote_code).model_type
    encoder = AutoModel.from_pretrained(source, trust_remote_code=config.trust_remote_code, **_no_pooler(model_type))
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    return encoder, tokenizer


def check_positions(encoder: PreTrainedModel, config: EncoderConfig) -> None:
    """Refuse dialogue chunks longer than the encoder has positions for (RoBERTa-style models reserve pad + 1)."""
    hf = encoder.config
    limit = hf.max_position_embeddings - (hf.pad_token_id + 1 if hf.model_type in ("roberta", "xlm-roberta") else 0)
    if config.context == "dialogue" and config.dialogue_tokens > limit:
        raise ConfigError(f"encoder.dialogue_tokens is {config.dialogue_tokens}, more than {config.name} has "
                          f"positions for ({limit}); set encoder.dialogue_tokens={limit} or less")


def freeze(model: DialogueClassifier, config: EncoderConfig) -> None:
    """Freeze the word embeddings, and with `freeze_layers` > 0 all embeddings and the lowest layers."""
    if config.freeze_embeddings:
        model.encoder.get_input_embeddings().requires_grad_(False)
    if config.freeze_layers:
        layers = getattr(getattr(model.encoder, "encoder", None), "layer", None)
        if layers is None:
            raise ValueError(f"freeze_layers: {type(model.encoder).__name__} has no encoder.layer list")
        if config.freeze_layers > len(layers):  # a hub model's (a local folder's is refused before training)
            raise ConfigError(f"encoder.freeze_layers is {config.freeze_layers}, more than the {len(layers)} layers of "
                              f"{config.name}; set {len(layers)} or less ({len(layers)}: the encoder frozen whole)")
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
    with bar(sum(len(d) for d in dialogues), "predict", show=progress) as shown:
        for start in range(0, len(dialogues), batch_dialogues):
            chunk = dialogues[start : start + batch_dialogues]
            inputs, lengths = encode_batch(tokenizer, chunk, config)
            out.append(torch.softmax(model(**inputs, lengths=lengths).float(), dim=-1).numpy())
            shown.update(sum(lengths))
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
    write_safetensors(save_file, state, folder / WEIGHTS, None if epoch is None else {"epoch": str(epoch)})


def saved_epoch(folder: Path) -> int | None:
    """The training epoch whose weights `folder` holds (None when not recorded)."""
    check_file(folder / WEIGHTS)
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
    check_file(folder / WEIGHTS)
    try:
        weights = load_file(str(folder / WEIGHTS))
    except SafetensorError as err:
        raise DataError(folder / WEIGHTS, None, f"unreadable weights ({err}): retrain the model") from None
    model.load_state_dict(weights)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=encoder_config.trust_remote_code)
    return model.eval(), tokenizer


