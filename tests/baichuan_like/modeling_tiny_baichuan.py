"""A tiny Baichuan2-like causal LM for erckit's tests (our own code, loaded with trust_remote_code).

It reproduces what erckit must cope with in Baichuan2-13B-Chat's modelling code:
- a fused query/key/value projection `W_pack` and an alibi attention bias (no position ids);
- the attention mask is built over past + new tokens and cut to its last row only when exactly one
  token is fed: several new tokens on top of a cache fail with a size mismatch;
- legacy tuple caches: the past length is read as `past_key_values[0][0].shape[2]`, so the cache
  objects of `model.generate` break it;
- a normalised output head (`NormHead`), not an nn.Linear, that normalises its weight in place in eval mode;
- a config whose `gradient_checkpointing` is a tuple: layers are checkpointed with reentrant autograd
  whenever it is truthy in training.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_tiny_baichuan import TinyBaichuanConfig


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.heads = config.num_attention_heads
        self.head_dim = config.hidden_size // self.heads
        self.W_pack = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=False)
        self.o_proj = nn.Linear(config.hidden_size, config.hidden_size, bias=False)

    def forward(self, x, mask, past):
        batch, length, hidden = x.shape
        qkv = self.W_pack(x).view(batch, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        query, key, value = qkv[0], qkv[1], qkv[2]
        if past is not None:
            key, value = torch.cat([past[0], key], dim=2), torch.cat([past[1], value], dim=2)
        scores = query @ key.transpose(2, 3) / math.sqrt(self.head_dim)
        if length == 1:  # one token on a cache: the last row of the mask
            mask = mask[:, :, -1:, :]
        weights = torch.softmax(scores + mask, dim=-1)
        out = (weights @ value).transpose(1, 2).reshape(batch, length, hidden)
        return self.o_proj(out), (key, value)


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, mask, past=None):
        attended, present = self.self_attn(self.input_layernorm(x), mask, past)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), present


class NormHead(nn.Module):
    """The output head: logits against unit-norm rows of the weight. As Baichuan2's: in training mode it
    normalises on every call; in eval mode its first call normalises the weight in place (lost where the
    weight is a temporary gathered copy, as under ZeRO-3 or FSDP) and later calls use the weight as it is."""

    def __init__(self, hidden_size, vocab_size):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size))
        self.first_flag = True

    def forward(self, x):
        if self.training:
            self.first_flag = True
            return F.linear(x, F.normalize(self.weight, dim=-1))
        if self.first_flag:
            self.first_flag = False
            self.weight.data = F.normalize(self.weight, dim=-1)
        return F.linear(x, self.weight)


class TinyBaichuanPreTrainedModel(PreTrainedModel):
    config_class = TinyBaichuanConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["Layer"]  # noqa: RUF012 (transformers reads class attributes)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding, NormHead)):
            module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)


class TinyBaichuanModel(TinyBaichuanPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.gradient_checkpointing = config.gradient_checkpointing
        self.post_init()

    def attention_bias(self, attention_mask, total, dtype):
        """[batch, heads, total, total]: alibi by key position, causal and padding masks."""
        heads = self.config.num_attention_heads
        slopes = torch.tensor([2 ** (-8 * (i + 1) / heads) for i in range(heads)], device=attention_mask.device)
        positions = torch.arange(total, device=attention_mask.device)
        bias = (slopes[:, None, None] * positions[None, None, :]).to(dtype)
        future = positions[None, :] > positions[:, None]
        padding = attention_mask[:, None, None, :] == 0
        return bias[None].masked_fill(future[None, None] | padding, torch.finfo(dtype).min)

    def forward(self, input_ids, attention_mask=None, past_key_values=None, use_cache=False):
        batch, length = input_ids.shape
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        total = past_length + length
        if attention_mask is None:
            attention_mask = torch.ones(batch, total, dtype=torch.long, device=input_ids.device)
        hidden = self.embed_tokens(input_ids)
        mask = self.attention_bias(attention_mask, total, hidden.dtype)
        presents = []
        for i, layer in enumerate(self.layers):
            past = past_key_values[i] if past_key_values is not None else None
            if self.gradient_checkpointing and self.training:
                hidden, present = torch.utils.checkpoint.checkpoint(layer, hidden, mask, past, use_reentrant=True)
            else:
                hidden, present = layer(hidden, mask, past)
            presents.append(present)
        return self.norm(hidden), tuple(presents) if use_cache else None


class TinyBaichuanForCausalLM(TinyBaichuanPreTrainedModel, GenerationMixin):
    def __init__(self, config):
        super().__init__(config)
        self.model = TinyBaichuanModel(config)
        self.lm_head = NormHead(config.hidden_size, config.vocab_size)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, past_key_values=None, use_cache=None, labels=None,
                return_dict=None, **kwargs):
        hidden, presents = self.model(input_ids, attention_mask, past_key_values, bool(use_cache))
        logits = self.lm_head(hidden)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1))
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=presents)

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None, **kwargs):
        if past_key_values:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "past_key_values": past_key_values, "attention_mask": attention_mask,
                "use_cache": kwargs.get("use_cache")}
