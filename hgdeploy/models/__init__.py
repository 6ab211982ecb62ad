"""Eager PyTorch reference models, state_dict-compatible with the upstream checkpoints."""
