"""Detector stand-ins: CornerNet's targets and loss against plain re-derivations (IoU at the
Gaussian radius, per-element loops of the loss formulas), a few steps on a fixed batch lower
the loss, and the checkpoint loads back in CornerNet-Lite's layout."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, synthetic_model

from hgdeploy.models.cornernet import HEAT_BIAS_INIT
from hgdeploy.models.loader import load_model
from hgdeploy.standin import detector_training
from hgdeploy.standin.corner_losses import focal_loss, gather_at, offset_loss, pull_push_loss
from hgdeploy.standin.corner_targets import corner_targets, gaussian_radius
from hgdeploy.standin.detector_training import (
    DetectorTrainConfig,
    detector_held_out_set,
    detector_loss,
    output_hw,
    prior_heads,
    save_detector_checkpoint,
    scene_batch,
    train_detector,
)
from hgdeploy.standin.scenes import detection_set
from hgdeploy.standin.training import TrainResult


@pytest.mark.parametrize("height, width", [(10, 10), (7, 30), (41, 13), (3, 4)])
def test_gaussian_radius_is_where_the_worst_corner_shift_reaches_the_overlap(
    height: float, width: float
) -> None:
    """The three ways CornerNet moves both corners by r, as IoU formulas: the tightest one is
    exactly min_overlap at the radius, and none is below it."""
    r = gaussian_radius(height, width, 0.3)
    area = height * width
    same_size = (height - r) * (width - r) / (2 * area - (height - r) * (width - r))
    both_in = (height - 2 * r) * (width - 2 * r) / area
    both_out = area / ((height + 2 * r) * (width + 2 * r))
    assert min(same_size, both_in, both_out) == pytest.approx(0.3, abs=1e-9)


def test_targets_peak_at_the_truncated_corner_cells() -> None:
    boxes = [np.array([[10.0, 20.0, 100.0, 90.0]]), np.zeros((0, 4))]
    classes = [np.array([2]), np.zeros(0, int)]
    targets = corner_targets(boxes, classes, (255, 255), (32, 32), categories=5)
    ratio = 32 / 255
    tl = (int(10 * ratio), int(20 * ratio))
    br = (int(100 * ratio), int(90 * ratio))
    assert targets.tl_heat[0, 2, tl[1], tl[0]] == 1 and targets.br_heat[0, 2, br[1], br[0]] == 1
    assert (targets.tl_heat == 1).sum() == 1 and (targets.br_heat == 1).sum() == 1
    assert targets.tl_heat[1].sum() == 0 and targets.tl_heat[0, [0, 1, 3, 4]].sum() == 0
    assert targets.mask.tolist()[0][:2] == [True, False] and not targets.mask[1].any()
    assert targets.tl_index[0, 0] == tl[1] * 32 + tl[0]
    np.testing.assert_allclose(targets.tl_off[0, 0], (10 * ratio - tl[0], 20 * ratio - tl[1]),
                               rtol=1e-6)  # fmt: skip
    radius = max(0, int(gaussian_radius(math.ceil(70 * ratio), math.ceil(90 * ratio))))
    row = targets.tl_heat[0, 2, tl[1]].numpy()
    assert np.count_nonzero(row) == min(tl[0], radius) + radius + 1  # the bump's width


def _loop_focal(logits: np.ndarray, truth: np.ndarray) -> float:
    positives, total = 0, 0.0
    for logit, t in zip(logits.ravel(), truth.ravel()):
        p = min(max(1 / (1 + math.exp(-logit)), 1e-4), 1 - 1e-4)
        if t == 1:
            positives += 1
            total += math.log(p) * (1 - p) ** 2
        else:
            total += math.log(1 - p) * p**2 * (1 - t) ** 4
    return -total / positives if positives else -total


def test_losses_equal_their_formulas_element_by_element() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 5, 6))
    truth = rng.uniform(size=logits.shape) * 0.9
    truth[0, 1, 2, 3] = truth[1, 0, 4, 5] = 1
    got = focal_loss(torch.from_numpy(logits), torch.from_numpy(truth)).item()
    assert got == pytest.approx(_loop_focal(logits, truth), rel=1e-9)

    tl, br = rng.normal(size=(2, 4)), rng.normal(size=(2, 4))
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    pull, push = pull_push_loss(*(torch.from_numpy(a) for a in (tl, br, mask)))
    want_pull = want_push = 0.0
    f32 = np.float32  # upstream counts objects in float32: its count + 1e-4 rounds there
    for b in range(2):
        n = int(mask[b].sum())
        count, pairs = float(f32(n) + f32(1e-4)), float(f32(n - 1) * f32(n) + f32(1e-4))
        means = [(tl[b, i] + br[b, i]) / 2 for i in range(n)]
        for i in range(n):
            want_pull += ((tl[b, i] - means[i]) ** 2 + (br[b, i] - means[i]) ** 2) / count
            for j in range(n):  # upstream also sums i == j (a constant)
                gap = max(0.0, 1 - abs(means[i] - means[j])) - float(f32(1) / f32(count))
                want_push += gap / pairs
    assert pull.item() == pytest.approx(want_pull, rel=1e-9)
    assert push.item() == pytest.approx(want_push, rel=1e-9)

    maps = torch.from_numpy(rng.normal(size=(2, 2, 3, 4)))
    index = torch.tensor([[5, 11], [0, 7]])
    gathered = gather_at(maps, index)
    assert gathered[0, 1].tolist() == maps[0, :, 2, 3].tolist()  # cell 11 = row 2, col 3
    truth_off = torch.zeros(2, 2, 2)
    loss = offset_loss(gathered, truth_off, torch.tensor([[True, False], [False, False]]))
    smooth = [abs(v) - 0.5 if abs(v) >= 1 else 0.5 * v * v for v in maps[0, :, 1, 1].tolist()]
    assert loss.item() == pytest.approx(sum(smooth) / float(f32(1) + f32(1e-4)), rel=1e-9)


def test_training_batches_follow_the_boxes_when_mirrored() -> None:
    scenes = detection_set(4, 1_000_123, (127, 127), classes=3)
    plain_batch = scene_batch("squeeze", scenes)
    plain, plain_targets = plain_batch.inputs, plain_batch.targets
    assert plain_batch.attention is None and plain_targets.tl_valid is None

    class Always:  # every image mirrored
        def random(self) -> float:
            return 0.0

    mirrored_batch = scene_batch("squeeze", scenes, Always())  # type: ignore[arg-type]
    mirrored, mirrored_targets = mirrored_batch.inputs, mirrored_batch.targets
    assert torch.equal(mirrored, plain.flip(3))
    assert output_hw("squeeze", (127, 127)) == (16, 16) == tuple(plain_targets.tl_heat.shape[2:])
    assert torch.equal(plain_targets.mask, mirrored_targets.mask)
    # a mirrored box's top-left x is the original's right edge seen from the other side
    first = next(a for a in scenes.coco["annotations"] if a["image_id"] == 1)
    x, y, w, _ = first["bbox"]
    ratio = 16 / 127
    cell = int(y * ratio) * 16 + int(min(127 - (x + w) - 1, 126) * ratio)
    assert mirrored_targets.tl_index[0, 0] == cell


@pytest.fixture(scope="module")
def trained() -> TrainResult:
    """Six steps on one fixed batch of small scenes (every step draws the same ones)."""
    torch.manual_seed(0)
    fixed = detection_set(4, 1_000_077, (127, 127), classes=2, max_objects=2)
    patch = pytest.MonkeyPatch()
    patch.setattr(detector_training, "detection_set", lambda *args, **kwargs: fixed)
    try:
        config = DetectorTrainConfig(steps=6, batch=4, input_hw=(127, 127), warmup=1, flip=False)
        model = prior_heads(copy.deepcopy(synthetic_model("squeeze")))  # the cache stays as is
        return train_detector("squeeze", config, model=model)
    finally:
        patch.undo()


def test_a_few_steps_lower_the_detector_loss_on_a_fixed_batch(trained: TrainResult) -> None:
    assert len(trained.losses) == 6 and all(np.isfinite(trained.losses))
    assert trained.losses[-1] < 0.85 * trained.losses[0]
    assert not trained.model.training


def test_the_detector_checkpoint_loads_back_in_cornernet_lite_layout(
    trained: TrainResult, tmp_path: Path
) -> None:
    path = save_detector_checkpoint(trained.model, "squeeze", tmp_path)
    assert path.suffix == ".pkl"
    saved = torch.load(path, weights_only=True)
    assert all(key.startswith("module.") for key in saved)  # its DummyModule wrapper
    loaded = load_model("squeeze", checkpoint=path)
    inputs = torch.rand((1, 3, 127, 127), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        for a, b in zip(loaded(inputs), trained.model(inputs), strict=True):
            assert torch.equal(a, b)


def test_the_held_out_set_is_the_training_task_at_the_native_size() -> None:
    held_out = detector_held_out_set(2)
    assert held_out.images[0].shape == (255, 255, 3)
    with pytest.raises(Exception, match="held-out seeds"):
        detector_held_out_set(2, seed=1_000_000)


def test_the_standin_command_trains_a_detector_that_evaluate_and_predict_load(
    tmp_path: Path,
) -> None:
    def run(args: list[str]) -> str:
        code, output = run_cli(args)
        assert code == 0, output
        return output

    checkpoint, val = tmp_path / "squeeze.pkl", tmp_path / "val"
    run(["standin", "--model", "squeeze", "--steps", "1", "--batch", "4",
         "--output", str(checkpoint), "--val-dir", str(val), "--val-count", "2"])  # fmt: skip
    assert sorted(p.name for p in val.iterdir()) == ["000001.png", "000002.png", "annotations.json"]
    output = run(["evaluate", "--model", "squeeze", "--checkpoint", str(checkpoint),
                  "--annotations", str(val / "annotations.json"), "--images", str(val)])  # fmt: skip
    assert "squeeze on" in output and "+0.00" in output  # the eager run against itself
    run(["predict", "--model", "squeeze", "--checkpoint", str(checkpoint), "--image",
         str(val / "000001.png"), "--output", str(tmp_path / "predicted")])  # fmt: skip


def test_saccade_attention_targets_mark_each_object_at_its_levels() -> None:
    """Upstream's rule read directly: the larger side picks the levels (closed ranges, so 32
    and 96 mark two), the centre divided by the level's stride (truncated) is the one cell."""
    from hgdeploy.standin.saccade_targets import attention_hws, attention_targets

    boxes = [np.array([[10.0, 10.0, 130.0, 60.0],  # 120 wide: the 1/16 level
                       [200.0, 100.0, 232.0, 120.0],  # 32 wide: 1/8 and 1/4
                       [3.0, 240.0, 8.0, 250.0]]),  # 10 high: 1/4
             np.zeros((0, 4))]  # fmt: skip
    maps = attention_targets(boxes, (255, 255))
    assert [tuple(m.shape) for m in maps] == [(2, 1, h, w) for h, w in attention_hws((255, 255))]
    assert attention_hws((255, 255)) == [(16, 16), (32, 32), (64, 64)]
    expected = [{(int(35 / 16), int(70 / 16))},
                {(int(110 / 8), int(216 / 8))},
                {(int(110 / 4), int(216 / 4)), (int(245 / 4), int(5.5 / 4))}]  # fmt: skip
    for level, cells in enumerate(expected):
        marked = {(int(y), int(x)) for y, x in zip(*np.nonzero(maps[level][0, 0].numpy()))}
        assert marked == cells and maps[level][1].sum() == 0


def test_saccade_masks_objects_under_its_min_scale_out_of_the_heatmap_loss() -> None:
    """An object under 16 pixels gets no slot and no bump; its corners' cells get valid 0."""
    boxes = [np.array([[10.0, 20.0, 100.0, 90.0], [150.0, 150.0, 160.0, 162.0]])]
    targets = corner_targets(boxes, [np.array([1, 1])], (255, 255), (64, 64), categories=3,
                             min_overlap=0.5, min_scale=16)  # fmt: skip
    assert targets.mask[0].sum() == 1 and (targets.tl_heat == 1).sum() == 1
    ratio = 64 / 255
    assert targets.tl_valid is not None and targets.br_valid is not None
    assert targets.tl_valid[0, 1, int(150 * ratio), int(150 * ratio)] == 0
    assert targets.br_valid[0, 1, int(162 * ratio), int(160 * ratio)] == 0
    assert targets.tl_valid[0, 1, int(20 * ratio), int(10 * ratio)] == 1
    assert targets.tl_valid[0, [0, 2]].min() == 1


def test_saccade_loss_equals_its_formula_term_by_term() -> None:
    """CornerNet_Saccade_Loss written out: per stack the masked focal loss and the CornerNet
    terms; per level the attention focal loss averaged over stacks; all over the stacks."""
    from hgdeploy.standin.corner_losses import cornernet_loss, saccade_loss

    generator = torch.Generator().manual_seed(3)
    boxes = [np.array([[10.0, 20.0, 100.0, 90.0], [150.0, 150.0, 160.0, 162.0]])]
    targets = corner_targets(boxes, [np.array([0, 1])], (255, 255), (16, 16), categories=2,
                             min_overlap=0.5, min_scale=16)  # fmt: skip
    attention = [torch.zeros(1, 1, s, s) for s in (4, 8, 16)]
    attention[2][0, 0, 3, 5] = 1

    def stack() -> tuple[torch.Tensor, ...]:
        shapes = [(1, 2, 16, 16)] * 2 + [(1, 1, 16, 16)] * 2 + [(1, 2, 16, 16)] * 2
        shapes += [(1, 1, s, s) for s in (4, 8, 16)]
        return tuple(torch.randn(s, generator=generator) for s in shapes)

    stacks = [stack(), stack()]
    unmasked = dataclasses.replace(targets, tl_valid=None, br_valid=None)

    def masked_focal(logits: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> float:
        total, positives = 0.0, 0
        for p, t, v in zip(logits.sigmoid().clamp(1e-4, 1 - 1e-4).flatten().tolist(),
                           truth.flatten().tolist(), valid.flatten().tolist()):  # fmt: skip
            if t == 1:
                positives += 1
                total += math.log(p) * (1 - p) ** 2 * v
            else:
                total += math.log(1 - p) * p**2 * (1 - t) ** 4 * v
        return -total / positives if positives else -total

    corner_only = cornernet_loss([s[:6] for s in stacks], unmasked).item() * 2
    unmasked_focal = sum(focal_loss(s[0], targets.tl_heat).item()
                         + focal_loss(s[1], targets.br_heat).item() for s in stacks)  # fmt: skip
    masked = sum(masked_focal(s[0], targets.tl_heat, targets.tl_valid)
                 + masked_focal(s[1], targets.br_heat, targets.br_valid) for s in stacks)  # fmt: skip
    ones = torch.ones(1)
    attention_terms = sum(
        sum(masked_focal(s[6 + level], truth, ones.expand_as(truth)) for s in stacks) / 2
        for level, truth in enumerate(attention)
    )
    expected = (corner_only - unmasked_focal + masked + attention_terms) / 2
    assert saccade_loss(stacks, targets, attention).item() == pytest.approx(expected, rel=1e-5)


def test_a_few_saccade_steps_lower_its_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    """Saccade's every_stack gives each stack's heads and attention logits at the maps'
    sizes, and four steps on one fixed batch lower the loss; the checkpoint loads back."""
    torch.manual_seed(0)
    fixed = detection_set(2, 1_000_079, (127, 127), classes=2, max_objects=2)
    model = prior_heads(copy.deepcopy(synthetic_model("saccade")))
    with torch.no_grad():
        stacks = model.every_stack(torch.zeros(1, 3, 127, 127))
    assert len(stacks) == 3 and [tuple(t.shape[2:]) for t in stacks[0][6:]] == [
        (8, 8), (16, 16), (32, 32)]  # fmt: skip
    patch = pytest.MonkeyPatch()
    patch.setattr(detector_training, "detection_set", lambda *args, **kwargs: fixed)
    try:
        config = DetectorTrainConfig(steps=4, batch=2, input_hw=(127, 127), warmup=1, flip=False)
        result = train_detector("saccade", config, model=model)
    finally:
        patch.undo()
    assert all(np.isfinite(result.losses)) and result.losses[-1] < 0.9 * result.losses[0]
    loaded = load_model("saccade", checkpoint=save_detector_checkpoint(result.model, "saccade",
                                                                      tmp_path))  # fmt: skip
    inputs = torch.rand((1, 3, 127, 127), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded(inputs), result.model(inputs)))


def test_the_prior_covers_saccade_s_attention_heads() -> None:
    """The synthetic weights replace upstream's -2.19 prior on every head; `prior_heads` must
    restore it on the attention heads too (the first Saccade stand-in's attention terms
    started at 50-2700 without it and its heads ended dead at the probability clamp)."""
    model = prior_heads(copy.deepcopy(synthetic_model("saccade")))
    biases = [att[-1].bias for stack in model.att_modules for att in stack]
    assert len(biases) == 9
    assert all(torch.all(bias == HEAT_BIAS_INIT) for bias in biases)


@pytest.mark.parametrize("name", ["squeeze", "saccade"])
def test_a_bf16_step_gives_the_fp32_step_s_loss_on_the_same_batch(name: str) -> None:
    """bf16 autocast (`DetectorTrainConfig.bf16`) must be a faster way to the same step: on one
    batch its loss within 2 % of fp32's (bf16 keeps 8 mantissa bits, ~0.4 % per rounding; the
    30-step CornerNet curves in benchmarks/accuracy/training_profile.md end within 0.1 %), in
    fp32, and not fp32's own number (autocast did run). The weights stay fp32."""
    scenes = detection_set(2, 1_000_123, (127, 127), classes=2, max_objects=2)
    batch = scene_batch(name, scenes, None)
    model = prior_heads(copy.deepcopy(synthetic_model(name)))
    model.train()
    losses = []
    for bf16 in (False, True):
        model.zero_grad(set_to_none=True)
        loss = detector_loss(model, batch, bf16)
        loss.backward()
        assert loss.dtype == torch.float32 and torch.isfinite(loss)
        losses.append(loss.item())
    assert losses[1] != losses[0]
    assert losses[1] == pytest.approx(losses[0], rel=0.02)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_is_refused_for_the_pose_stand_ins(tmp_path: Path) -> None:
    code, output = run_cli(["standin", "--model", "hrnet", "--bf16", "--steps", "1",
                            "--output", str(tmp_path / "h.pth")])  # fmt: skip
    assert code == 1 and "--bf16 is for the detector stand-ins" in output, output
    assert not (tmp_path / "h.pth").exists()
