"""Real input images and the upstream-style preprocessing that turns them into network inputs.

Sample photographs come from scikit-image, which ships them inside its wheel (no download), so
parity checks, calibration and demos run on real image statistics anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.zoo import ModelSpec

# Colour photographs bundled with scikit-image (people, animals, objects, street scenes).
SAMPLE_IMAGES = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def sample_images(names: Iterable[str] = SAMPLE_IMAGES) -> list[tuple[str, np.ndarray]]:
    """(name, HxWx3 uint8 RGB) pairs from scikit-image's bundled data."""
    from skimage import data

    images = []
    for name in names:
        if name == "motorcycle":
            image = data.stereo_motorcycle()[0]
        else:
            image = getattr(data, name)()
        images.append((name, np.ascontiguousarray(image[..., :3], dtype=np.uint8)))
    return images


def read_image(path: str | Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, or a one-line error.

    The pixels are what upstream's ``cv2.imread`` gives: EXIF orientation applied, 16-bit
    samples by their high byte. Images larger than PIL's decompression-bomb limit are refused."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise HgDeployError(f"cannot read image {path}: {first_line(exc)}") from None
    return _decode(data, f"image {path}", None)


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes (a served request's body) as `read_image` reads the same file.

    `max_pixels` refuses a larger image from its header, before any pixel is decoded (a server
    must not let one request allocate gigabytes)."""
    if len(data) == 0:
        raise HgDeployError("empty image: the request carried no bytes")
    return _decode(data, "image", max_pixels)


def _decode(data: bytes, what: str, max_pixels: int | None) -> np.ndarray:
    """PIL reads the header only (size bounds, before any allocation); OpenCV decodes, as
    upstream reads its images (and ~0.7 ms faster per JPEG photo, ~1.6 ms per PNG, here)."""
    width, height = _header_size(data, what)
    if max_pixels is not None and width * height > max_pixels:
        raise HgDeployError(
            f"{what} is {width}x{height}, more than the {max_pixels} pixels allowed"
        )
    if _is_truncated(data):
        raise HgDeployError(f"cannot read {what}: the file is truncated")
    bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise HgDeployError(f"cannot read {what}: OpenCV cannot decode it")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _header_size(data: bytes, what: str) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Image.DecompressionBombError:
        limit = Image.MAX_IMAGE_PIXELS
        raise HgDeployError(
            f"cannot read {what}: more than {limit} pixels (refused as a possible "
            "decompression bomb)"
        ) from None
    except UnidentifiedImageError:  # PIL's message names a buffer object, not the file
        raise HgDeployError(f"cannot read {what}: not an image file PIL reads") from None
    except (OSError, ValueError) as exc:
        raise HgDeployError(f"cannot read {what}: {first_line(exc)}") from None


def _is_truncated(data: bytes) -> bool:
    """A JPEG without its end marker or a PNG without its IEND chunk: OpenCV would return the
    part it got (grey below) with only a warning on stderr; a cut-off upload must be refused."""
    if data.startswith(b"\xff\xd8"):
        return data.rfind(b"\xff\xd9") < 2
    if data.startswith(b"\x89PNG"):
        return data.rfind(b"IEND") < 8
    return False


def image_id_for(name: str | Path) -> int | str:
    """COCO's file names are the image id ("000000397133.jpg" -> 397133); others keep the stem."""
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else stem


def image_paths_in(directory: str | Path) -> list[Path]:
    """Every jpg/png/bmp file in `directory`, sorted by name, or a one-line error."""
    directory = Path(directory)
    if not directory.is_dir():
        raise HgDeployError(f"image directory not found: {directory}")
    paths = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise HgDeployError(f"no {'/'.join(IMAGE_SUFFIXES)} images in {directory}")
    return paths


def images_in(directory: str | Path) -> list[tuple[str, np.ndarray]]:
    """Every jpg/png/bmp image in `directory` (sorted by name), for calibration or parity."""
    return [(p.name, read_image(p)) for p in image_paths_in(directory)]


def letterbox(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize keeping the aspect ratio and centre on a zero canvas (upstream `crop_image` style)."""
    h, w = image.shape[:2]
    scale = min(height / h, width / w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def preprocess(spec: ModelSpec, images: Sequence[np.ndarray]) -> np.ndarray:
    """A float32 batch in the model's layout: resize, channel order, /255, mean/std."""
    height, width = spec.input_hw
    pre = spec.preprocessing
    batch = []
    for image in images:
        if pre.resize == "letterbox":
            fitted = letterbox(image, height, width)
        else:
            fitted = np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))
        pixels = fitted.astype(np.float32) / 255.0
        if pre.channel_order == "BGR":
            pixels = pixels[..., ::-1]
        pixels = (pixels - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        batch.append(pixels)
    stacked = np.stack(batch).astype(np.float32)
    if spec.layout == "NCHW":
        stacked = stacked.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(stacked)


def sample_batch(spec: ModelSpec, batch: int) -> np.ndarray:
    """`batch` preprocessed sample images (cycling through the bundled ones)."""
    samples = sample_images()
    chosen = [samples[i % len(samples)][1] for i in range(batch)]
    return preprocess(spec, chosen)
