"""The LLM path: chat templates, LoRA fine-tuning, checkpoint selection, merging, prediction backends."""
