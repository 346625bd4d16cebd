"""Config of the tiny Baichuan2-like test model (erckit's own code, loaded with trust_remote_code)."""

from transformers import PretrainedConfig


class TinyBaichuanConfig(PretrainedConfig):
    model_type = "tiny_baichuan"

    def __init__(self, vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=4, rms_norm_eps=1e-6, initializer_range=0.2, pad_token_id=0, bos_token_id=1,
                 eos_token_id=2, gradient_checkpointing=False, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        # As Baichuan2's config: the trailing comma makes it a tuple, which is always true.
        self.gradient_checkpointing = gradient_checkpointing,
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
