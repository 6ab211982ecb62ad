"""Upstream's test-time pipelines: image -> preprocessing -> any backend's network ->
post-processing -> boxes or keypoints in original image pixels (see `factory.build_pipeline`)."""

from hgdeploy.pipelines.factory import build_pipeline
from hgdeploy.pipelines.results import Detections, Pose

__all__ = ["Detections", "Pose", "build_pipeline"]
