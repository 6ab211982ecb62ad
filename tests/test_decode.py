"""Tests for the CornerNet-family test-mode decoder (`hgdeploy.models.decode`).

Three layers: hand-built heatmaps whose detections can be written down exactly; an independent
brute-force reference in plain Python loops compared on random heads; and the upstream settings
of every CornerNet model in the zoo.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from hgdeploy.base.zoo import ZOO, DecodeSettings
from hgdeploy.models.decode import decode_corners, decode_with

BACKGROUND_LOGIT = -10.0
PEAK_LOGIT = 5.0

# ---------------------------------------------------------------------------------------------
# Hand-built heads
# ---------------------------------------------------------------------------------------------


@dataclass
class Heads:
    """Six corner heads filled with background; `corner()` plants one corner."""

    batch: int = 1
    classes: int = 80
    height: int = 16
    width: int = 16
    tensors: list[torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        b, c, h, w = self.batch, self.classes, self.height, self.width
        self.tensors = [
            torch.full((b, c, h, w), BACKGROUND_LOGIT),
            torch.full((b, c, h, w), BACKGROUND_LOGIT),
            torch.zeros(b, 1, h, w),
            torch.zeros(b, 1, h, w),
            torch.zeros(b, 2, h, w),
            torch.zeros(b, 2, h, w),
        ]

    def corner(
        self,
        kind: str,
        cls: int,
        y: int,
        x: int,
        *,
        tag: float,
        off_x: float = 0.0,
        off_y: float = 0.0,
        logit: float = PEAK_LOGIT,
        image: int = 0,
    ) -> None:
        heat, tags, offs = (0, 2, 4) if kind == "tl" else (1, 3, 5)
        self.tensors[heat][image, cls, y, x] = logit
        self.tensors[tags][image, 0, y, x] = tag
        self.tensors[offs][image, 0, y, x] = off_x
        self.tensors[offs][image, 1, y, x] = off_y

    def decode(self, **kwargs: object) -> torch.Tensor:
        settings = {"K": 10, "ae_threshold": 0.5, "num_dets": 100, "kernel": 3}
        settings.update(kwargs)
        return decode_corners(*self.tensors, **settings)  # type: ignore[arg-type]


def sigmoid32(logit: float) -> float:
    return torch.sigmoid(torch.tensor(logit, dtype=torch.float32)).item()


def row_for_box(dets: torch.Tensor, box: tuple[float, float, float, float]) -> torch.Tensor:
    """The single output row of one image that pairs two planted corners into `box`.

    Every pair is in the output when num_dets = K*K, so a rejected pair can be looked up and its
    -1 score checked. Offsets are per position, not per class, so background corners of other
    classes at a planted cell give the same box; the corner scores tell them apart.
    """
    planted = (dets[:, 5] > 0.5) & (dets[:, 6] > 0.5)
    matches = planted & ((dets[:, :4] - torch.tensor(box)).abs().amax(dim=1) < 1e-6)
    assert int(matches.sum()) == 1, f"expected exactly one row with box {box}"
    return dets[matches][0]


def one_object(**tag_overrides: float) -> Heads:
    """Class 3 object: top-left at (y=2, x=3), bottom-right at (y=10, x=12)."""
    heads = Heads()
    heads.corner("tl", 3, 2, 3, tag=tag_overrides.get("tl_tag", 0.1), off_x=0.25, off_y=0.5)
    heads.corner("br", 3, 10, 12, tag=tag_overrides.get("br_tag", 0.2), off_x=0.75, off_y=0.125)
    return heads


OBJECT_BOX = (3.25, 2.5, 12.75, 10.125)


def test_single_object_is_the_best_detection() -> None:
    dets = one_object().decode()
    assert dets.shape == (1, 100, 8)
    assert dets.dtype == torch.float32
    peak = sigmoid32(PEAK_LOGIT)
    expected = torch.tensor([*OBJECT_BOX, peak, peak, peak, 3.0])
    torch.testing.assert_close(dets[0, 0], expected, atol=1e-6, rtol=0)
    # Everything else pairs background cells (score sigmoid(-10)) or is rejected.
    assert dets[0, 1, 4] < 1e-3


def test_two_objects_of_different_classes() -> None:
    heads = one_object()
    heads.corner("tl", 7, 5, 1, tag=1.0, off_x=0.5, off_y=0.5, logit=3.0)
    heads.corner("br", 7, 14, 9, tag=1.1, off_x=0.0, off_y=0.25, logit=2.0)
    dets = heads.decode()[0]

    torch.testing.assert_close(dets[0, :4], torch.tensor(OBJECT_BOX), atol=1e-6, rtol=0)
    assert dets[0, 7] == 3.0
    second_score = (sigmoid32(3.0) + sigmoid32(2.0)) / 2
    expected = torch.tensor(
        [1.5, 5.5, 9.0, 14.25, second_score, sigmoid32(3.0), sigmoid32(2.0), 7.0]
    )
    torch.testing.assert_close(dets[1], expected, atol=1e-6, rtol=0)
    # Cross-object pairs have geometrically valid boxes but different classes: rejected.
    cross = row_for_box(dets, (3.25, 2.5, 9.0, 14.25))
    assert cross[4] == -1.0
    assert cross[5] == pytest.approx(sigmoid32(PEAK_LOGIT)) and cross[6] == pytest.approx(
        sigmoid32(2.0)
    ), "rejected rows still carry their corner scores, as upstream"


def test_tags_farther_apart_than_threshold_are_rejected() -> None:
    dets = one_object(tl_tag=0.1, br_tag=0.9).decode(ae_threshold=0.5)[0]
    assert row_for_box(dets, OBJECT_BOX)[4] == -1.0
    # A looser threshold accepts the same pair.
    dets = one_object(tl_tag=0.1, br_tag=0.9).decode(ae_threshold=1.0)[0]
    torch.testing.assert_close(dets[0, :4], torch.tensor(OBJECT_BOX), atol=1e-6, rtol=0)


def test_tag_distance_equal_to_threshold_is_kept() -> None:
    # Upstream rejects only `dist > ae_threshold`; 0.0 vs 0.5 is exactly representable.
    dets = one_object(tl_tag=0.0, br_tag=0.5).decode(ae_threshold=0.5)[0]
    assert row_for_box(dets, OBJECT_BOX)[4] == pytest.approx(sigmoid32(PEAK_LOGIT))


@pytest.mark.parametrize(
    ("br_y", "br_x", "br_off", "box"),
    [
        (10, 1, (0.0, 0.0), (3.25, 2.5, 1.0, 10.0)),  # br left of tl
        (1, 12, (0.0, 0.0), (3.25, 2.5, 12.0, 1.0)),  # br above tl
        # Same cell column as tl, but the offsets put br_x (3.1) left of tl_x (3.25): upstream
        # compares the boxes after the offsets are added.
        (10, 3, (0.1, 0.0), (3.25, 2.5, 3.1, 10.0)),
    ],
)
def test_inverted_boxes_are_rejected(
    br_y: int, br_x: int, br_off: tuple[float, float], box: tuple[float, float, float, float]
) -> None:
    heads = Heads()
    heads.corner("tl", 3, 2, 3, tag=0.1, off_x=0.25, off_y=0.5)
    heads.corner("br", 3, br_y, br_x, tag=0.1, off_x=br_off[0], off_y=br_off[1])
    assert row_for_box(heads.decode()[0], box)[4] == -1.0


def test_degenerate_box_with_equal_corners_is_kept() -> None:
    # Only strictly inverted boxes (br < tl) are rejected.
    heads = Heads()
    heads.corner("tl", 3, 4, 4, tag=0.0)
    heads.corner("br", 3, 4, 4, tag=0.0)
    dets = heads.decode()[0]
    torch.testing.assert_close(dets[0, :4], torch.tensor([4.0, 4.0, 4.0, 4.0]))
    assert dets[0, 4] == pytest.approx(sigmoid32(PEAK_LOGIT))


def test_different_classes_are_rejected() -> None:
    heads = Heads()
    heads.corner("tl", 3, 2, 3, tag=0.1, off_x=0.25, off_y=0.5)
    heads.corner("br", 4, 10, 12, tag=0.2, off_x=0.75, off_y=0.125)
    assert row_for_box(heads.decode()[0], OBJECT_BOX)[4] == -1.0


@pytest.mark.parametrize(
    ("tl", "br", "rejected_by_no_border"),
    [
        # (y, x, off_x, off_y) of each corner
        ((2, 0, 0.5, 0.0), (10, 12, 0.0, 0.0), True),  # tl on the left edge
        ((0, 3, 0.0, 0.5), (10, 12, 0.0, 0.0), True),  # tl on the top edge
        ((2, 3, 0.0, 0.0), (10, 15, -0.5, 0.0), True),  # br on the right edge (W-1)
        ((2, 3, 0.0, 0.0), (15, 12, 0.0, -0.5), True),  # br on the bottom edge (H-1)
        # Offsets that move a corner onto the border value do not count: the test is on the
        # integer cell, before offsets.
        ((2, 1, -1.0, 0.0), (10, 12, 0.0, 0.0), False),
        ((2, 3, 0.0, 0.0), (10, 14, 1.0, 0.0), False),
        # Only tl's top/left and br's bottom/right edges are checked: a tl cell on the last
        # row/column and a br cell on row/column 0 are fine (offsets keep the boxes upright).
        ((15, 15, -0.5, -0.5), (14, 14, 0.75, 0.75), False),
        ((1, 1, -0.5, -0.5), (0, 0, 0.75, 0.75), False),
    ],
)
def test_no_border(
    tl: tuple[int, int, float, float],
    br: tuple[int, int, float, float],
    rejected_by_no_border: bool,
) -> None:
    heads = Heads()
    heads.corner("tl", 3, tl[0], tl[1], tag=0.1, off_x=tl[2], off_y=tl[3])
    heads.corner("br", 3, br[0], br[1], tag=0.1, off_x=br[2], off_y=br[3])
    box = (tl[1] + tl[2], tl[0] + tl[3], br[1] + br[2], br[0] + br[3])
    peak = sigmoid32(PEAK_LOGIT)

    assert row_for_box(heads.decode(no_border=False)[0], box)[4] == pytest.approx(peak)
    expected = -1.0 if rejected_by_no_border else pytest.approx(peak)
    assert row_for_box(heads.decode(no_border=True)[0], box)[4] == expected


def test_batch_images_are_decoded_independently() -> None:
    heads = Heads(batch=2)
    heads.corner("tl", 3, 2, 3, tag=0.1, off_x=0.25, off_y=0.5, image=0)
    heads.corner("br", 3, 10, 12, tag=0.2, off_x=0.75, off_y=0.125, image=0)
    heads.corner("tl", 10, 6, 4, tag=-2.0, off_x=0.5, off_y=0.0, logit=4.0, image=1)
    heads.corner("br", 10, 13, 7, tag=-2.3, off_x=0.0, off_y=0.75, logit=1.0, image=1)
    dets = heads.decode()
    assert dets.shape == (2, 100, 8)

    peak = sigmoid32(PEAK_LOGIT)
    torch.testing.assert_close(
        dets[0, 0], torch.tensor([*OBJECT_BOX, peak, peak, peak, 3.0]), atol=1e-6, rtol=0
    )
    s_tl, s_br = sigmoid32(4.0), sigmoid32(1.0)
    torch.testing.assert_close(
        dets[1, 0],
        torch.tensor([4.5, 6.0, 7.0, 13.75, (s_tl + s_br) / 2, s_tl, s_br, 10.0]),
        atol=1e-6,
        rtol=0,
    )


def test_nms_suppresses_a_weaker_neighbour_within_the_kernel() -> None:
    heads = one_object()
    # A slightly weaker tl one cell to the right of the real one: inside the 3x3 window.
    heads.corner("tl", 3, 2, 4, tag=0.1, logit=4.9)
    dets = heads.decode(kernel=3)[0]
    tl_positions = {(round(float(r[0]), 3), round(float(r[1]), 3)) for r in dets}
    assert (4.0, 2.0) not in tl_positions
    # With kernel=1 there is no suppression and the neighbour forms the second-best box.
    dets = heads.decode(kernel=1)[0]
    torch.testing.assert_close(
        dets[1, :4], torch.tensor([4.0, 2.0, 12.75, 10.125]), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"K": 80 * 16 * 16 + 1, "num_dets": 1}, "K="),
        ({"K": 10, "num_dets": 101}, "num_dets="),
        ({"K": 10, "num_dets": 10, "kernel": 2}, "kernel"),
    ],
)
def test_invalid_settings_raise(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_corners(*Heads().tensors, ae_threshold=0.5, **kwargs)  # type: ignore[arg-type]


def test_mismatched_head_shapes_raise() -> None:
    tensors = Heads().tensors
    tensors[4] = torch.zeros(1, 1, 16, 16)  # offsets need 2 channels
    with pytest.raises(ValueError, match="tl_off"):
        decode_corners(*tensors, K=10, ae_threshold=0.5, num_dets=10)


def test_decode_with_needs_six_heads() -> None:
    settings = DecodeSettings(K=10, ae_threshold=0.5, num_dets=10)
    with pytest.raises(ValueError, match="6 corner heads"):
        decode_with(settings, Heads().tensors[:5])


# ---------------------------------------------------------------------------------------------
# Brute-force reference
# ---------------------------------------------------------------------------------------------


def reference_decode_image(
    heads: list[np.ndarray],
    *,
    K: int,
    ae_threshold: float,
    kernel: int,
    no_border: bool,
) -> list[tuple[float, ...]]:
    """All K*K pair rows of one image, computed with plain loops in float64.

    Written from the algorithm's description, not from the implementation: NMS by scanning
    every window, top-K by sorting a list of candidates, and one loop iteration per pair.
    """
    tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off = heads
    classes, height, width = tl_heat.shape
    radius = kernel // 2

    def top_corners(logits: np.ndarray) -> list[tuple[float, int, int, int]]:
        heat = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        candidates = []
        for c in range(classes):
            for y in range(height):
                for x in range(width):
                    window_max = max(
                        heat[c, yy, xx]
                        for yy in range(max(0, y - radius), min(height, y + radius + 1))
                        for xx in range(max(0, x - radius), min(width, x + radius + 1))
                    )
                    score = heat[c, y, x] if heat[c, y, x] == window_max else 0.0
                    candidates.append((score, c, y, x))
        candidates.sort(key=lambda cand: -cand[0])
        assert candidates[K - 1][0] > candidates[K][0], "ambiguous top-K; pick another seed"
        return candidates[:K]

    rows = []
    for tl_score, tl_cls, tl_y, tl_x in top_corners(tl_heat):
        for br_score, br_cls, br_y, br_x in top_corners(br_heat):
            box = (
                tl_x + float(tl_off[0, tl_y, tl_x]),
                tl_y + float(tl_off[1, tl_y, tl_x]),
                br_x + float(br_off[0, br_y, br_x]),
                br_y + float(br_off[1, br_y, br_x]),
            )
            rejected = (
                tl_cls != br_cls
                or abs(float(tl_tag[0, tl_y, tl_x]) - float(br_tag[0, br_y, br_x])) > ae_threshold
                or box[2] < box[0]
                or box[3] < box[1]
                or (
                    no_border
                    and (tl_y == 0 or tl_x == 0 or br_y == height - 1 or br_x == width - 1)
                )
            )
            score = -1.0 if rejected else (tl_score + br_score) / 2
            rows.append((*box, score, tl_score, br_score, float(tl_cls)))
    return rows


def random_heads(
    seed: int, batch: int, classes: int, height: int, width: int
) -> list[torch.Tensor]:
    """Random heads with top-left corners biased towards the top-left and bottom-right ones
    towards the bottom-right, one cell in from the border, so that a fair share of the pairs
    survive the geometric and border checks and are compared as accepted detections."""
    gen = torch.Generator().manual_seed(seed)
    ys = torch.arange(height, dtype=torch.float32).view(height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, width)
    tl_bias = -3 * ((ys - 1).abs() / height + (xs - 1).abs() / width)
    br_bias = -3 * ((ys - (height - 2)).abs() / height + (xs - (width - 2)).abs() / width)
    return [
        torch.randn(batch, classes, height, width, generator=gen) * 2 + tl_bias,
        torch.randn(batch, classes, height, width, generator=gen) * 2 + br_bias,
        torch.rand(batch, 1, height, width, generator=gen),
        torch.rand(batch, 1, height, width, generator=gen),
        torch.rand(batch, 2, height, width, generator=gen),
        torch.rand(batch, 2, height, width, generator=gen),
    ]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("kernel", "no_border", "height", "width", "k"),
    [
        # Non-square grids catch H/W mix-ups; a 5x5 window leaves fewer local maxima, hence
        # the larger grid there.
        (3, False, 8, 10, 10),
        (3, True, 8, 10, 10),
        (1, False, 8, 10, 10),
        (5, True, 12, 14, 10),
    ],
)
def test_matches_brute_force_reference(
    seed: int, kernel: int, no_border: bool, height: int, width: int, k: int
) -> None:
    batch, classes = 2, 2
    ae_threshold = 0.5
    heads = random_heads(seed, batch, classes, height, width)
    dets = decode_corners(
        *heads, K=k, ae_threshold=ae_threshold, num_dets=k * k, kernel=kernel, no_border=no_border
    )
    assert dets.shape == (batch, k * k, 8)

    for image in range(batch):
        expected = reference_decode_image(
            [h[image].numpy() for h in heads],
            K=k,
            ae_threshold=ae_threshold,
            kernel=kernel,
            no_border=no_border,
        )
        valid = sorted((r for r in expected if r[4] != -1.0), key=lambda r: -r[4])
        rejected = sorted(r for r in expected if r[4] == -1.0)
        assert len(valid) >= 2, "test inputs should produce some accepted pairs"

        got = dets[image].double().numpy()
        got_valid = got[got[:, 4] != -1.0]
        got_rejected = np.array(sorted(map(tuple, got[got[:, 4] == -1.0])))
        assert len(got_valid) == len(valid)
        # Accepted pairs: same boxes, scores and classes in the same (score) order.
        np.testing.assert_allclose(got_valid, np.array(valid), atol=1e-6, rtol=0)
        # Rejected pairs tie at -1 so their order is unspecified; compare them as a set.
        np.testing.assert_allclose(got_rejected, np.array(rejected), atol=1e-6, rtol=0)


def test_reference_sees_border_rejections() -> None:
    """Guard for the test above: no_border must actually change the random cases' results."""
    heads = random_heads(0, 2, 2, 8, 10)
    border_allowed, border_rejected = (
        decode_corners(*heads, K=10, ae_threshold=0.5, num_dets=100, no_border=flag)
        for flag in (False, True)
    )
    assert int((border_allowed[..., 4] == -1).sum()) < int((border_rejected[..., 4] == -1).sum())


# ---------------------------------------------------------------------------------------------
# Upstream settings from the zoo
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cornernet", "squeeze", "saccade"])
def test_zoo_decode_settings(name: str) -> None:
    spec = ZOO[name]
    assert spec.decode is not None
    batch = 2
    gen = torch.Generator().manual_seed(0)
    heads = [torch.randn(batch, *out.shape, generator=gen) for out in spec.outputs[:6]]
    # Random corners of 80 classes rarely pair up; plant one clear object per image.
    side = spec.outputs[0].shape[-1]
    for image, cls in enumerate((5, 61)):
        heads[0][image, cls, 3, 4] = 10.0
        heads[1][image, cls, side - 5, side - 7] = 10.0
        heads[2][image, 0, 3, 4] = heads[3][image, 0, side - 5, side - 7] = 0.25

    dets = decode_with(spec.decode, heads)

    assert dets.shape == (batch, spec.decode.num_dets, 8)
    assert dets.dtype == torch.float32
    scores = dets[..., 4]
    assert torch.all(scores[:, :-1] >= scores[:, 1:]), "detections come best first"
    assert torch.all((dets[..., 7] >= 0) & (dets[..., 7] < 80) & (dets[..., 7] % 1 == 0))
    assert dets[:, 0, 7].tolist() == [5.0, 61.0]
    accepted = scores > -1
    boxes = dets[accepted]
    assert torch.all(boxes[:, 2] >= boxes[:, 0]) and torch.all(boxes[:, 3] >= boxes[:, 1])
    torch.testing.assert_close(boxes[:, 4], (boxes[:, 5] + boxes[:, 6]) / 2)


def test_zoo_upstream_numbers() -> None:
    """The two sizes the brief pins: squeeze keeps 100 detections, cornernet 1000, at 128x128."""
    gen = torch.Generator().manual_seed(1)
    heads = [torch.randn(1, c, 128, 128, generator=gen) for c in (80, 80, 1, 1, 2, 2)]
    squeeze, cornernet = ZOO["squeeze"].decode, ZOO["cornernet"].decode
    assert squeeze is not None and cornernet is not None
    assert decode_with(squeeze, heads).shape == (1, 100, 8)
    assert decode_with(cornernet, heads).shape == (1, 1000, 8)
