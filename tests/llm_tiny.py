"""A tiny in-process causal LM for tests: 2-layer Llama, hidden 32, with a real multilingual tokenizer.

The tokenizer is XLM-R's (multilingual-e5-small's `tokenizer.json`, shipped with erckit):
250,002 tokens, Chinese and English. The model is built from a config
dict, optionally taught a few answers (`fit_answers`), and saved to a folder that `load_model` loads.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from erckit.encoder.packaged import tokenizer_json
from erckit.llm.chat import ChatTemplate, encode_pair

TINY_CONFIG = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "initializer_range": 0.2,
}


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tokenizer_json()), bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.padding_side = "left"
    return tokenizer


def tiny_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0, **overrides) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **(TINY_CONFIG | overrides),
    )
    return LlamaForCausalLM(config).eval()


def fit_answers(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    template: ChatTemplate,
    pairs: list[tuple[str, str]],
    steps: int = 60,
    lr: float = 0.03,
    sharpen: float = 8.0,
) -> LlamaForCausalLM:
    """Teach the model to answer each prompt with its answer (+ closing marker); loss on the answer only.

    The (tied) embeddings stay frozen and logits are computed for the answer positions only, so a step
    takes milliseconds despite the 250k vocabulary.
    """
    encoded = [encode_pair(template, prompt, answer, tokenizer) for prompt, answer in pairs]
    width = max(len(c) + len(t) for c, t in encoded)
    ids = torch.full((len(encoded), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    rows, positions, targets = [], [], []
    for row, (context, target) in enumerate(encoded):  # right-padded batch; loss at the answer tokens only
        ids[row, : len(context) + len(target)] = torch.tensor(context + target)
        mask[row, : len(context) + len(target)] = 1
        for j, token in enumerate(target):
            rows.append(row)
            positions.append(len(context) - 1 + j)
            targets.append(token)
    embeddings = model.get_input_embeddings().weight
    embeddings.requires_grad_(False)  # tied with lm_head: 250k rows stay as they are
    with torch.no_grad():
        model.model.norm.weight.fill_(sharpen)  # larger logits: a few steps give clear margins
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = model.lm_head(hidden[rows, positions])
        torch.nn.functional.cross_entropy(logits, torch.tensor(targets)).backward()
        optimizer.step()
    embeddings.requires_grad_(True)
    return model.eval()


def save_tiny(folder: Path, model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@torch.no_grad()
def brute_force_log_prob(model, tokenizer, template: ChatTemplate, prompt: str, answer: str) -> float:
    """log p(answer | prompt) from one unpadded full-sequence forward pass (the reference)."""
    context, target = encode_pair(template, prompt, answer, tokenizer)
    # Logits of the positions that predict the answer tokens: the last len(target) + 1 but the final one.
    logits = model(input_ids=torch.tensor([context + target]), logits_to_keep=len(target) + 1).logits[0, :-1]
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return float(sum(log_probs[j, token] for j, token in enumerate(target)))
