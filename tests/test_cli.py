"""The command line: the zoo listing and the eager reference run on a real image."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

from hgdeploy.base.zoo import ZOO
from hgdeploy.cli import main


def test_models_lists_every_zoo_entry() -> None:
    result = CliRunner().invoke(main, ["models"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for name, spec in ZOO.items():
        assert name in result.output
        shape = "x".join(map(str, spec.input_shape(spec.default_batch)))
        assert shape in result.output


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hgdeploy", "--help"], capture_output=True, text=True, check=True
    )
    assert "export" in done.stdout or "models" in done.stdout


def test_unknown_model_is_rejected() -> None:
    result = CliRunner().invoke(main, ["predict", "--model", "yolo"])
    assert result.exit_code == 2
    assert "'yolo' is not one of" in result.output


def test_predict_on_user_image(tmp_path: Path) -> None:
    image = tmp_path / "person.png"
    pixels = (np.random.default_rng(0).random((300, 200, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    result = CliRunner().invoke(main, ["predict", "--model", "hrnet", "--image", str(image)])
    assert result.exit_code == 0, result.output
    assert "(200x300)" in result.output  # the photograph's own size: keypoints in its pixels
    assert "person score" in result.output


def test_predict_unreadable_image(tmp_path: Path) -> None:
    image = tmp_path / "broken.jpg"
    image.write_bytes(b"not an image")
    result = CliRunner().invoke(main, ["predict", "--model", "hrnet", "--image", str(image)])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot read image")
