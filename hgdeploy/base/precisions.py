"""The precision registry: one definition of each numeric precision hgdeploy deploys at.

A precision is a name, what it means, and the tolerance its outputs are judged by against the
eager fp32 model (`parity`, `bench`). Which backends run or build it is each backend's own
declaration (`hgdeploy.backends`), so this table never restates them. Adding a precision is one
entry here plus the backend module(s) that build it and the conversion that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from hgdeploy.base.errors import HgDeployError


@dataclass(frozen=True)
class Tolerance:
    """Per-output comparison tolerance, Polygraphy's elementwise rule: an element passes when its
    absolute error <= the effective atol or its relative error <= rtol.

    Rounding error scales with the magnitude of the activations, and that magnitude depends on
    the weights (a trained pose net emits heatmaps in [0, 1]; synthetic weights reach 40), so the
    absolute tolerance is `atol` or `range_fraction` of the reference output's max |value|,
    whichever is larger.
    """

    atol: float
    rtol: float
    range_fraction: float = 0.0
    # Polygraphy's check_error_stat: "elemwise" bounds every element; "mean" bounds the mean
    # error, for precisions whose individual elements may legitimately stray (int8).
    stat: str = "elemwise"

    def effective_atol(self, scale: float) -> float:
        return max(self.atol, self.range_fraction * scale)


@dataclass(frozen=True)
class Precision:
    name: str
    summary: str
    # How outputs at this precision are judged against eager fp32; None for a precision that is
    # only known once a backend has compiled (judged by what it compiled to).
    tolerance: Tolerance | None
    # Judged on the real photographs only (reduced precisions: their tolerances were set on
    # photos; noise far outside the data says nothing about a deployment).
    photos_only: bool = True
    # Whether the numerics live in the artifact (fp16 weights, int8 Q/DQ: any runtime that reads
    # it runs them) or are a compile option of one runtime (bf16: OpenVINO's hint).
    in_artifact: bool = True


# fp32: the eager and exported graphs run the same fp32 operations in a different order (fused
# BN, other conv algorithms), so the difference is accumulated rounding over 50-200 layers:
# measured 4e-6 (Squeeze) to 3e-5 (8-stack Hourglass) of the output range. 3e-4 of the range
# leaves 10x headroom; any real defect (a wrong op, layout or weight) moves outputs by 1e-2 of
# the range or more (a 5% change of one conv weight fails by 100x).
_FP32 = Tolerance(atol=1e-4, rtol=1e-3, range_fraction=3e-4)
# fp16 (FP16 weights and activations, FP32 I/O), judged on real images. Measured max |error| /
# range vs eager fp32 with ONNX Runtime CPU (fp16 storage, fp32 arithmetic): 0.0025 (Hourglass),
# 0.007 (Squeeze), 0.023 (Saccade), 0.036 (HRNet). TensorRT may also accumulate in fp16, so
# 0.1 of the range leaves ~3x headroom; a broken conversion (e.g. fp16 overflow) gives O(1).
_FP16 = Tolerance(atol=1e-3, rtol=1e-2, range_fraction=0.1)
# bf16 (OpenVINO CPU: the fp32 ONNX compiled with the bf16 inference-precision hint), judged on
# real images. bf16 keeps an 8-bit mantissa (0.4% per rounding), and synthetic-weight networks
# amplify it over their depth: measured max |error| / range vs eager fp32, OpenVINO 2026.4 on an
# AVX512_BF16 CPU, 0.049 (HRNet) and 0.033-0.059 (Squeeze, worst tl_tag). 0.2 of the range
# leaves >3x headroom; a broken conversion or a wrong op gives O(1).
_BF16 = Tolerance(atol=1e-3, rtol=1e-2, range_fraction=0.2)
# int8 (explicit symmetric Q/DQ, per-channel weights), judged by the mean error on real images:
# 5% of the range is what a usable int8 deployment of a trained model keeps (PTQ of trained
# CNNs typically stays within a few percent). NOT met by hgdeploy's synthetic random weights,
# whose int8 error is 0.9% (Hourglass) to 11% (HRNet, Saccade) of the range: random networks
# amplify rounding noise far more than trained ones, so int8 parity needs real checkpoints.
_INT8 = Tolerance(atol=1e-3, rtol=0.0, range_fraction=0.05, stat="mean")

PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "FP32, IEEE (the CPU backends' default)", _FP32, photos_only=False),
        Precision("fp16", "FP16 weights and activations, FP32 I/O (the TensorRT default)", _FP16),
        Precision(
            "bf16",
            "BF16 compute: OpenVINO's inference-precision hint, recorded with the IR",
            _BF16,
            in_artifact=False,
        ),
        Precision(
            "int8",
            "INT8 convolutions calibrated on real images: TensorRT symmetric Q/DQ, ONNX Runtime "
            "U8S8 Q/DQ, or NNCF for OpenVINO",
            _INT8,
        ),
        Precision(
            "default",
            "no precision hint: the runtime's own choice for this CPU (OpenVINO)",
            None,
            in_artifact=False,
        ),
    )
}
# An int8 Q/DQ graph's unquantized layers run in one of these (the first is the default, as in
# NVIDIA ModelOpt; fp32 isolates the int8 error). See hgdeploy/precision/int8.py.
INT8_HIGH_PRECISIONS: tuple[str, ...] = ("fp16", "fp32")
# Precisions an artifact can be judged at (a fixed tolerance); "default" is judged by what the
# runtime compiled to.
JUDGED_PRECISIONS: tuple[str, ...] = tuple(n for n, p in PRECISIONS.items() if p.tolerance)


def get_precision(name: str) -> Precision:
    """The precision called `name`, or a one-line error listing the known ones."""
    try:
        return PRECISIONS[name]
    except KeyError:
        raise HgDeployError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)}") from None


def tolerance_for(name: str) -> Tolerance:
    """The tolerance outputs at precision `name` are judged by (one-line error if none)."""
    tolerance = get_precision(name).tolerance
    if tolerance is None:
        raise HgDeployError(f"{name} outputs have no fixed tolerance")
    return tolerance

# INT8 calibration methods by name (the CLI's choices; no numpy needed to list them): their
# implementations are `hgdeploy.precision.calibration_methods.CALIBRATION_METHODS`, keyed so.
CALIBRATION_METHOD_NAMES: tuple[str, ...] = ("max", "percentile", "entropy", "mse")
