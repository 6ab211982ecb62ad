"""Read upstream checkpoints as they are and load them strictly into the eager models.

Formats seen upstream (all saved with `torch.save`):

* CornerNet-Lite `*.pkl`: a bare state_dict with `module.` prefixes (its `DummyModule` wrapper).
* pytorch_stacked_hourglass `checkpoint.pt`: `{'state_dict': ..., 'optimizer': ..., 'epoch': ...}`
  with `model.module.` prefixes (its `Trainer` around a `DataParallel`).
* HRNet `final_state.pth`: a bare state_dict; `checkpoint.pth`: `{'state_dict': ...}` with
  `module.` prefixes (a `DataParallel`).
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from hgdeploy.base.errors import HgDeployError, first_line

# Wrapper prefixes that upstream training code adds; longest first so `model.module.` wins.
WRAPPER_PREFIXES = ("model.module.", "module.", "model.")
_SHOWN = 3  # how many offending keys a one-line error names


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The tensors of an upstream checkpoint, unwrapped from its container and prefixes."""
    path = Path(path)
    if not path.is_file():
        raise HgDeployError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        reason = first_line(exc)
        raise HgDeployError(f"cannot read checkpoint {path}: {reason}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise HgDeployError(f"checkpoint {path} holds no state_dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if len(tensors) != len(obj):
        raise HgDeployError(f"checkpoint {path} is not a state_dict: some values are not tensors")
    return strip_wrapper_prefix(tensors)


def strip_wrapper_prefix(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Drop a `module.`-style prefix shared by every key (DataParallel and trainer wrappers)."""
    for prefix in WRAPPER_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return dict(state_dict)


def check_compatible(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Raise a one-line error naming the first missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and state_dict[k].shape != v.shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", mismatched)):
        if keys:
            more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:_SHOWN])}{more}")
    if problems:
        raise HgDeployError(f"{source} does not fit {type(model).__name__}: {'; '.join(problems)}")


def load_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> nn.Module:
    """Strictly load `state_dict` into `model` after a readable compatibility check."""
    check_compatible(model, state_dict, source)
    model.load_state_dict(state_dict, strict=True)
    return model
