"""CornerNet's training loss (CornerNet-Lite `py_utils/losses.py` `CornerNet_Loss`), for
detector stand-ins: per stack, the heatmaps' focal loss, the tags' pull/push (associative
embedding) loss and the offsets' smooth-L1 loss, summed and divided by the stack count.
`saccade_loss` is its `CornerNet_Saccade_Loss`: the heatmaps' focal loss masked by the valid
maps, plus the attention maps' focal loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from hgdeploy.standin.corner_targets import CornerTargets

PROBABILITY_CLAMP = 1e-4  # upstream's _sigmoid keeps log() finite
EPS = 1e-4  # upstream's guard in every division by an object count


def focal_loss(logits: Tensor, truth: Tensor, valid: Tensor | None = None) -> Tensor:
    """CornerNet's variant of the focal loss (alpha 2, beta 4): positives are truth == 1,
    negatives are down-weighted by (1 - truth)^4 near a bump; normalised by the positives.
    `valid` (Saccade's `_focal_loss_mask`) weights every cell's term (0: not counted)."""
    p = torch.sigmoid(logits).clamp(PROBABILITY_CLAMP, 1 - PROBABILITY_CLAMP)
    positive = truth.eq(1)
    weight = torch.ones_like(truth) if valid is None else valid
    negative_weight = torch.pow(1 - truth, 4) * truth.lt(1) * weight
    positive_loss = (torch.log(p) * torch.pow(1 - p, 2) * weight)[positive].sum()
    negative_loss = (torch.log(1 - p) * torch.pow(p, 2) * negative_weight).sum()
    count = positive.sum()
    if count == 0:
        return -negative_loss
    return -(positive_loss + negative_loss) / count


def gather_at(maps: Tensor, index: Tensor) -> Tensor:
    """(B, C, H, W) maps read at flat cells index (B, M): (B, M, C)."""
    batch, channels = maps.shape[:2]
    flat = maps.reshape(batch, channels, -1).permute(0, 2, 1)
    return flat.gather(1, index.unsqueeze(2).expand(-1, -1, channels))


def pull_push_loss(tl_tag: Tensor, br_tag: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Associative embedding: pull an object's two corner tags to their mean, push different
    objects' means at least 1 apart. Tags are (B, M), mask (B, M) bool. Upstream's sums,
    including its i == j push terms (a constant that carries no gradient)."""
    count = mask.sum(dim=1, keepdim=True).float()
    mean = (tl_tag + br_tag) / 2
    pull = ((tl_tag - mean).pow(2) + (br_tag - mean).pow(2)) / (count + EPS)
    pull = pull[mask].sum()
    pairs = mask.unsqueeze(1) & mask.unsqueeze(2)
    count = count.unsqueeze(2)
    distance = nn.functional.relu(1 - (mean.unsqueeze(1) - mean.unsqueeze(2)).abs())
    distance = (distance - 1 / (count + EPS)) / ((count - 1) * count + EPS)
    return pull, distance[pairs].sum()


def offset_loss(offset: Tensor, truth: Tensor, mask: Tensor) -> Tensor:
    """Smooth-L1 between gathered offsets (B, M, 2) and their targets over the objects."""
    count = mask.float().sum()
    loss = nn.functional.smooth_l1_loss(offset[mask], truth[mask], reduction="sum")
    return loss / (count + EPS)


def cornernet_loss(stacks: Sequence[Sequence[Tensor]], targets: CornerTargets) -> Tensor:
    """Every stack's (tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off) raw heads against the
    targets, pull/push/offset weights 1 as upstream; the sum divided by the stack count."""
    return _corner_terms(stacks, targets) / max(len(stacks), 1)


def saccade_loss(
    stacks: Sequence[Sequence[Tensor]], targets: CornerTargets, attention: Sequence[Tensor]
) -> Tensor:
    """Every stack's six raw heads and three raw attention logits against the corner targets
    (with their valid masks) and the per-level attention targets (`saccade_targets`). As
    upstream: each level's attention focal loss summed over stacks and divided by the stack
    count, added to the corner terms, the whole divided by the stack count again."""
    attention_total = torch.zeros(())
    for level, truth in enumerate(attention):
        per_stack = sum((focal_loss(s[6 + level], truth) for s in stacks), torch.zeros(()))
        attention_total = attention_total + per_stack / max(len(stacks), 1)
    return (_corner_terms(stacks, targets) + attention_total) / max(len(stacks), 1)


def stack_terms(stack: Sequence[Tensor], targets: CornerTargets) -> dict[str, Tensor]:
    """One stack's corner terms by name, in the order the loss adds them (what
    benchmarks/accuracy/detector_loss_terms.py reports)."""
    tl_heat, br_heat, tl_tag, br_tag, tl_off, br_off = stack[:6]
    tags = (gather_at(t, i).squeeze(2) for t, i in ((tl_tag, targets.tl_index),
                                                      (br_tag, targets.br_index)))  # fmt: skip
    mask = targets.mask
    pull, push = pull_push_loss(*tags, mask)
    return {
        "tl_focal": focal_loss(tl_heat, targets.tl_heat, targets.tl_valid),
        "br_focal": focal_loss(br_heat, targets.br_heat, targets.br_valid),
        "pull": pull,
        "push": push,
        "tl_offset": offset_loss(gather_at(tl_off, targets.tl_index), targets.tl_off, mask),
        "br_offset": offset_loss(gather_at(br_off, targets.br_index), targets.br_off, mask),
    }


def _corner_terms(stacks: Sequence[Sequence[Tensor]], targets: CornerTargets) -> Tensor:
    """The sum over stacks of the heatmaps' focal, tags' pull/push and offsets' losses (added
    one by one in `stack_terms`' order: the trainer's recorded losses depend on it)."""
    total = torch.zeros(())
    for stack in stacks:
        for term in stack_terms(stack, targets).values():
            total = total + term
    return total
