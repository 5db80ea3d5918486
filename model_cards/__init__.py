"""Jinja templates for model and dataset cards (shipped as ``hf_structguard.model_cards``)."""
