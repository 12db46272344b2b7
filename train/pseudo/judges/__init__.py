"""Judges behind one `Judge` protocol (`base`): reward model, OpenAI-compatible endpoint, local transformers model."""
