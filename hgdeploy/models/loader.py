"""`load_model`: a zoo name (+ optional upstream checkpoint) -> an eval-mode eager model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from hgdeploy.base.artifacts import sha256_file
from hgdeploy.base.zoo import get_spec
from hgdeploy.models.checkpoints import load_into, read_state_dict
from hgdeploy.models.synthetic import synthesize_weights


def load_model(name: str, checkpoint: str | Path | None = None, *, seed: int = 0) -> nn.Module:
    """Build zoo model `name` in eval mode with upstream weights from `checkpoint`.

    Without a checkpoint the model gets deterministic synthetic weights from `seed`, BatchNorm
    calibrated on a seeded random input (see `hgdeploy.models.synthetic`), so every artifact made from
    it is reproducible and its activations are realistically scaled.
    """
    spec = get_spec(name)
    model = spec.build()
    if checkpoint is None:
        return synthesize_weights(model, spec.input_shape(1), seed)
    return load_into(model, read_state_dict(checkpoint), f"checkpoint {checkpoint}").eval()


def weights_provenance(checkpoint: str | Path | None, seed: int = 0) -> dict[str, Any]:
    """What a sidecar records about the weights an artifact was made from."""
    if checkpoint is None:
        return {"weights": "random-init", "seed": seed}
    return {
        "weights": "checkpoint",
        # Absolute: parity, bench and builds run from other directories than the export.
        "checkpoint": str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256_file(checkpoint),
    }
