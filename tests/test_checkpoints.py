"""Upstream checkpoint formats load as they are; bad files fail with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import golden_input, synthetic_model

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import ZOO
from hgdeploy.cli import main
from hgdeploy.models.checkpoints import read_state_dict, strip_wrapper_prefix
from hgdeploy.models.loader import load_model


def _prefixed(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in state_dict.items()}


# (model, how upstream's training code saves it, file name upstream uses)
UPSTREAM_FORMATS = [
    ("squeeze", lambda sd: _prefixed(sd, "module."), "CornerNet_Squeeze_500000.pkl"),
    ("saccade", lambda sd: _prefixed(sd, "module."), "CornerNet_Saccade_500000.pkl"),
    (
        "hourglass",
        lambda sd: {"state_dict": _prefixed(sd, "model.module."), "optimizer": {}, "epoch": 3},
        "checkpoint.pt",
    ),
    ("hrnet", lambda sd: dict(sd), "final_state.pth"),
    (
        "hrnet",
        lambda sd: {
            "epoch": 210,
            "model": "pose_hrnet",
            "state_dict": _prefixed(sd, "module."),
            "best_state_dict": dict(sd),
            "perf": 0.744,
        },
        "checkpoint.pth",
    ),
]


@pytest.mark.parametrize(("name", "wrap", "filename"), UPSTREAM_FORMATS)
def test_upstream_checkpoint_round_trip(name: str, wrap, filename: str, tmp_path: Path) -> None:
    reference = synthetic_model(name)
    path = tmp_path / filename
    torch.save(wrap(reference.state_dict()), path)
    loaded = load_model(name, path)
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = golden_input(ZOO[name].input_shape(1))
    with torch.no_grad():
        want, got = reference(x), loaded(x)
    for a, b in zip(
        want if isinstance(want, tuple) else (want,), got if isinstance(got, tuple) else (got,)
    ):
        assert torch.equal(a, b)


def test_prefix_stripping_only_when_every_key_has_it() -> None:
    t = torch.zeros(1)
    assert strip_wrapper_prefix({"model.module.a": t, "model.module.b": t}) == {"a": t, "b": t}
    assert strip_wrapper_prefix({"module.a": t}) == {"a": t}
    assert set(strip_wrapper_prefix({"module.a": t, "b": t})) == {"module.a", "b"}


@pytest.fixture(scope="module")
def hrnet_state_dict() -> dict[str, torch.Tensor]:
    return synthetic_model("hrnet").state_dict()


def _error(name: str, path: Path) -> str:
    with pytest.raises(HgDeployError) as info:
        load_model(name, path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file(tmp_path: Path) -> None:
    assert "checkpoint not found" in _error("hrnet", tmp_path / "nope.pth")


def test_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pth"
    path.write_bytes(b"\x80\x02 this is not a checkpoint" * 10)
    assert "cannot read checkpoint" in _error("hrnet", path)


def test_truncated_file(tmp_path: Path, hrnet_state_dict) -> None:
    path = tmp_path / "truncated.pth"
    torch.save(hrnet_state_dict, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "cannot read checkpoint" in _error("hrnet", path)


def test_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    assert "holds no state_dict" in _error("hrnet", path)


def test_wrong_model(tmp_path: Path, hrnet_state_dict) -> None:
    path = tmp_path / "hrnet.pth"
    torch.save(hrnet_state_dict, path)
    message = _error("squeeze", path)
    assert "does not fit CornerNetSqueeze" in message
    assert "990 missing: hg.pre.0.conv.weight" in message
    assert "1754 unexpected: conv1.weight" in message


def test_shape_mismatch_and_missing_key(tmp_path: Path, hrnet_state_dict) -> None:
    broken = dict(hrnet_state_dict)
    broken["final_layer.weight"] = torch.zeros(16, 32, 1, 1)
    del broken["conv1.weight"]
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    message = _error("hrnet", path)
    assert "1 missing: conv1.weight" in message
    assert "1 shape: final_layer.weight (16, 32, 1, 1) vs (17, 32, 1, 1)" in message


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    """weights_only=True: a checkpoint that would run code on load is rejected, not executed."""
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"a": torch.zeros(1)}, "obj": Path("x")}, path)
    assert "cannot read checkpoint" in _error("hrnet", path)


def test_read_state_dict_unwraps_trainer_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": {"model.module.x": torch.ones(2)}, "epoch": 1}, path)
    assert list(read_state_dict(path)) == ["x"]


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"not a pickle")
    result = CliRunner().invoke(main, ["predict", "--model", "squeeze", "--checkpoint", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot read checkpoint")
    assert result.output.count("\n") == 1
    assert "Traceback" not in result.output
