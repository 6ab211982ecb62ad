"""Reading and decoding photographs: the pixels upstream's `cv2.imread` gives, checked against
the arrays the files were written from (lossless formats exactly, JPEG within its own error)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import decode_image, read_image, sample_images

EXIF_ORIENTATION = 0x0112
ROTATE_90_CW = 6  # EXIF: the camera was turned; show the stored pixels turned clockwise


def _encoded(pixels: np.ndarray, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **options)
    return buffer.getvalue()


def test_png_photos_decode_to_their_exact_pixels() -> None:
    for name, pixels in sample_images():
        np.testing.assert_array_equal(decode_image(_encoded(pixels, "PNG")), pixels, err_msg=name)


def test_gray_png_becomes_three_equal_channels() -> None:
    gray = np.arange(48 * 32, dtype=np.uint32).reshape(48, 32).astype(np.uint8)
    decoded = decode_image(_encoded(gray, "PNG"))
    assert decoded.shape == (48, 32, 3)
    for channel in range(3):
        np.testing.assert_array_equal(decoded[..., channel], gray)


def test_jpeg_is_turned_by_its_exif_orientation_as_imread_does(tmp_path: Path) -> None:
    pixels = sample_images(["chelsea"])[0][1]  # 300x451, not square: a turn changes the shape
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CW
    path = tmp_path / "turned.jpg"
    image.save(path, "JPEG", quality=95, exif=exif.tobytes())
    decoded = read_image(path)
    expected = np.rot90(pixels, k=-1)  # clockwise
    assert decoded.shape == expected.shape == (451, 300, 3)
    # quality 95 JPEG: a few grey levels of error on average; a wrong turn is ~40 off
    assert np.abs(decoded.astype(int) - expected).mean() < 3.0
    np.testing.assert_array_equal(decode_image(path.read_bytes()), decoded)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_a_cut_off_file_is_refused_not_half_decoded(fmt: str, tmp_path: Path) -> None:
    data = _encoded(sample_images(["astronaut"])[0][1], fmt)
    cut = data[: len(data) // 2]
    with pytest.raises(HgDeployError, match="^cannot read image: the file is truncated$"):
        decode_image(cut)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(cut)
    with pytest.raises(HgDeployError, match=f"^cannot read image {path}: the file is truncated$"):
        read_image(path)


def test_bytes_that_are_no_image_are_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(HgDeployError, match="^cannot read image: not an image file PIL reads$"):
        decode_image(b"GIF? no: plain text")
    with pytest.raises(HgDeployError, match="^cannot read image .*missing.png: "):
        read_image(tmp_path / "missing.png")
