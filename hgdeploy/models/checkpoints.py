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
    """The tensors of an upstream checkpoint, unwrapped from its container and prefixes.

    Loaded with ``weights_only=True`` (a checkpoint is data, never code); anything that is not
    a state_dict of finite tensors is refused with one line saying what was found."""
    path = Path(path)
    if not path.is_file():
        raise HgDeployError(f"checkpoint not found: {path}")
    obj = _load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise HgDeployError(f"checkpoint {path} holds no state_dict (found {type(obj).__name__})")
    tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
    if not tensors:
        keys = ", ".join(repr(k) for k in list(obj)[:_SHOWN])
        raise HgDeployError(
            f"checkpoint {path} is a dict of {keys} with no tensors at the top level; expected "
            "a state_dict or {'state_dict': ...}"
        )
    if len(tensors) != len(obj):
        other = next(k for k, v in obj.items() if not isinstance(v, Tensor))
        raise HgDeployError(
            f"checkpoint {path} is not a state_dict: {other!r} is a {type(obj[other]).__name__}, "
            "not a tensor"
        )
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise HgDeployError(
                f"checkpoint {path} has non-finite values (NaN or inf) in {key!r}; refusing it"
            )
    return strip_wrapper_prefix(tensors)


def _load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            reason = "it holds Python objects besides tensors (hgdeploy reads data only)"
        else:
            reason = f"not a PyTorch checkpoint ({first_line(exc)})"
        raise HgDeployError(f"cannot read checkpoint {path}: {reason}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, IndexError,
            TypeError, UnicodeDecodeError, OSError) as exc:  # fmt: skip
        reason = f"{type(exc).__name__}: {first_line(exc)}"
        raise HgDeployError(
            f"cannot read checkpoint {path}: not a PyTorch checkpoint ({reason})"
        ) from None


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
