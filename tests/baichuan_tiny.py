"""Build the tiny Baichuan2-like model folder (tests/baichuan_like: our own remote code) for tests.

The folder holds config.json and tokenizer_config.json whose `auto_map` names the modelling and
tokenizer files copied beside them, a sentencepiece `tokenizer.model` trained on the given texts,
and random weights: it loads only with `trust_remote_code=True`, as Baichuan2-13B-Chat does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

CODE = Path(__file__).parent / "baichuan_like"
FILES = ("configuration_tiny_baichuan.py", "modeling_tiny_baichuan.py", "tokenization_tiny_baichuan.py")


def train_sentencepiece(texts: list[str], path: Path) -> None:
    """A small BPE sentencepiece model (ids 0 <unk>, 1 <s>, 2 </s>, as Baichuan2's) with the template markers."""
    import sentencepiece

    characters = len(set("".join(texts)))
    with open(path, "wb") as handle:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=handle, model_type="bpe", vocab_size=characters + 400,
            hard_vocab_limit=False, character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2,
            pad_id=-1, user_defined_symbols=["<reserved_106>", "<reserved_107>"], minloglevel=2,
        )


def build_baichuan_like(folder: Path, texts: list[str], seed: int = 0, **config) -> Path:
    """The folder of a tiny Baichuan2-like model (random weights) loadable with trust_remote_code."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy(CODE / name, folder / name)
    train_sentencepiece(texts, folder / "tokenizer.model")
    import sentencepiece

    vocab = sentencepiece.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
    tokenizer_config = {
        "auto_map": {"AutoTokenizer": ["tokenization_tiny_baichuan.TinyBaichuanTokenizer", None]},
        "tokenizer_class": "TinyBaichuanTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    model_config = {
        "model_type": "tiny_baichuan", "architectures": ["TinyBaichuanForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_tiny_baichuan.TinyBaichuanConfig",
                     "AutoModelForCausalLM": "modeling_tiny_baichuan.TinyBaichuanForCausalLM"},
        "vocab_size": vocab, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    } | config
    (folder / "config.json").write_text(json.dumps(model_config, indent=2))
    torch.manual_seed(seed)
    loaded = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModelForCausalLM.from_config(loaded, trust_remote_code=True, dtype=torch.float32)
    model.save_pretrained(folder)
    return folder
