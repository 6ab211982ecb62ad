"""The one calibration source of every int8 build (TensorRT Q/DQ, ONNX Runtime U8S8, NNCF).

It decides, the same way for all three:

* which images calibrate: a directory, or scikit-image's bundled samples less the held-out
  ``HOLDOUT_SAMPLES`` (the rest is kept for a quality check on images calibration never saw);
* what the weights were (the fp32 export's sidecar), so a cache made with other weights or for
  another model is refused;
* the *calibration record*: model, images, image source, batch, source sha256, weights, method
  and cache format. hgdeploy's own TensorRT cache carries it inside its JSON; the CPU targets'
  caches are their tools' formats (ONNX Runtime's TensorsData JSON, NNCF's statistics
  directory), so the same record sits beside them as the cache's sidecar.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgdeploy.base.artifacts import artifact_files, read_sidecar, sidecar_path, verify_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import images_in, sample_images
from hgdeploy.base.zoo import ModelSpec
from hgdeploy.precision.calibration_methods import CalibrationChoice

# Bundled samples kept out of the default calibration set: people and a street scene, the
# content the pose and detection models are for.
HOLDOUT_SAMPLES = ("astronaut", "motorcycle")
DEFAULT_CALIB_BATCHES = 8
# Fields that identify weights (a checkpoint's path may differ between machines; its hash not).
WEIGHT_KEYS = ("weights", "seed", "checkpoint_sha256")
# What a record copied from a cache keeps when the cache is reused.
_REUSED_FIELDS = ("images", "image_source", "method", "source_sha256")


def calibration_images(
    calib_dir: Path | None, count: int
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """The first ``count`` calibration images and the rest (for a quality check on unseen ones)."""
    if calib_dir is not None:
        available = images_in(calib_dir)
    else:
        available = [(n, p) for n, p in sample_images() if n not in HOLDOUT_SAMPLES]
    chosen = available[:count]
    return chosen, available[count:] or sample_images(HOLDOUT_SAMPLES)


def image_source(calib_dir: Path | None) -> str:
    return str(calib_dir) if calib_dir is not None else "scikit-image samples"


def weights_info(checkpoint_info: dict[str, Any] | None, fp32_onnx: Path) -> dict[str, Any]:
    """What the weights were: the caller's description, else the export sidecar's."""
    if checkpoint_info is not None:
        return {"weights_info": dict(checkpoint_info)}
    sidecar = read_sidecar(fp32_onnx) or {}
    keys = ("weights", "seed", "checkpoint", "checkpoint_sha256")
    return {"weights_info": {k: sidecar[k] for k in keys if k in sidecar}}


def check_cache_provenance(
    record: dict[str, Any], spec: ModelSpec, provenance: dict[str, Any], path: Path
) -> None:
    """Refuse a cache made for another model or other weights (tensor names alone may match)."""
    if record.get("model") != spec.name:
        raise HgDeployError(
            f"calibration cache {path} is for model {record.get('model')!r}, not {spec.name!r}"
        )
    theirs, ours = record.get("weights_info") or {}, provenance["weights_info"]
    shared = [k for k in WEIGHT_KEYS if k in theirs and k in ours]
    if any(theirs[k] != ours[k] for k in shared):
        raise HgDeployError(
            f"calibration cache {path} was made with other weights ({theirs}); recalibrate"
        )


def check_calibration_options(
    precision: str,
    calib_dir: Path | None,
    calib_cache: Path | None,
    calib_batches: int | None,
    choice: CalibrationChoice | None = None,
) -> None:
    """The calibration flags' one-line refusals, shared by every build."""
    if precision != "int8" and (calib_dir is not None or calib_cache is not None):
        raise HgDeployError("--calib-dir/--calib-cache only apply to --int8")
    if precision != "int8" and choice is not None and choice.given:
        raise HgDeployError("--calib-method only applies to --int8")
    if calib_batches is not None and calib_batches < 1:
        raise HgDeployError(f"--calib-batches must be >= 1, got {calib_batches}")


def unpack(pairs: Sequence[tuple[str, np.ndarray]]) -> tuple[list[str], list[np.ndarray]]:
    return [name for name, _ in pairs], [pixels for _, pixels in pairs]


@dataclass
class CalibrationSource:
    """Where one int8 build's ranges come from: images now, or a cache given with
    ``--calib-cache`` (its record checked against this model and these weights).

    ``provenance`` is the artifact's (``model``, ``source`` {path, sha256}, ``weights_info``).
    """

    spec: ModelSpec
    provenance: dict[str, Any]
    cache: Path  # the given cache, or where a new one is written
    from_cache: bool
    calib_dir: Path | None = None
    batches: int = DEFAULT_CALIB_BATCHES
    batch: int = 1
    record: dict[str, Any] = field(default_factory=dict)
    unseen: list[tuple[str, np.ndarray]] = field(default_factory=list)
    choice: CalibrationChoice = field(default_factory=CalibrationChoice)
    method: str = "max"  # what this backend records for `choice` in caches and sidecars

    @classmethod
    def for_build(
        cls,
        spec: ModelSpec,
        provenance: dict[str, Any],
        *,
        calib_cache: Path | None,
        default_cache: Path,
        calib_dir: Path | None,
        batches: int,
        batch: int = 1,
        choice: CalibrationChoice | None = None,
        method: str | None = None,
    ) -> CalibrationSource:
        return cls(
            spec,
            provenance,
            Path(calib_cache) if calib_cache is not None else default_cache,
            calib_cache is not None,
            calib_dir,
            batches,
            batch,
            choice=choice or CalibrationChoice(),
            method=method or (choice or CalibrationChoice()).label,
        )

    def images(self) -> tuple[list[str], list[np.ndarray]]:
        """The calibration images (names, pixels); fills the record and the unseen pool."""
        chosen, self.unseen = calibration_images(self.calib_dir, self.batches * self.batch)
        if not chosen:
            raise HgDeployError("no calibration images")
        names, pixels = unpack(chosen)
        self.record = {
            "model": self.spec.name,
            "images": names,
            "image_source": image_source(self.calib_dir),
            "batch": self.batch,
            "batches": -(-len(chosen) // self.batch),
            "source_sha256": self.provenance["source"]["sha256"],
            "weights_info": self.provenance["weights_info"],
        }
        return names, pixels

    def adopt(self, record: dict[str, Any]) -> None:
        """Take a cache's record after checking it was made for this model and these weights;
        the unseen pool becomes the samples the cache's calibration did not use."""
        check_cache_provenance(record, self.spec, self.provenance, self.cache)
        made_by = record.get("method")
        if self.choice.given and made_by is not None and made_by != self.method:
            raise HgDeployError(
                f"calibration cache {self.cache} was made by {made_by!r}, not "
                f"{self.method!r}: recalibrate or drop --calib-method"
            )
        used = set(record.get("images", []))
        self.unseen = [(n, p) for n, p in sample_images() if n not in used] or sample_images()
        self.record = record

    def adopt_sidecar(self) -> None:
        """For a tool's own cache format: the record is the cache's sidecar."""
        if not self.cache.exists():
            raise HgDeployError(f"calibration cache not found: {self.cache}")
        record = verify_sidecar(self.cache)
        if record is None:
            raise HgDeployError(
                f"calibration cache {self.cache} has no sidecar ({sidecar_path(self.cache).name}) "
                "saying which model and weights it was made for"
            )
        self.adopt(record)
        self.record = {k: record[k] for k in _REUSED_FIELDS if k in record}

    @contextlib.contextmanager
    def cache_to_write(
        self, method: str, cache_format: str, *, directory: bool = False
    ) -> Iterator[Path]:
        """Where a tool writes its own cache format; on a clean exit the cache and its record
        (as the sidecar) are committed together. With a given cache: that cache, read only."""
        if self.from_cache:
            yield self.cache
            return
        members = (self.cache,) if directory else ()
        with artifact_files(self.cache, directories=members) as pending:
            yield pending.tmp()
            record = {**self.record, "method": method, "format": cache_format}
            if not directory:  # a file cache is tied to its record by its hash
                record["sha256"] = pending.sha256()
            pending.describe(record)

    def describe(self, method: str) -> dict[str, Any]:
        """What the artifact's sidecar says about its calibration."""
        return {
            **{k: v for k, v in self.record.items() if k not in ("amax", "format")},
            "method": method,
            "cache": str(self.cache),
            "from_cache": self.from_cache,
        }
