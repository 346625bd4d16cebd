"""erckit: emotion recognition in conversation with fine-tuned language models."""

__version__ = "0.1.0"
