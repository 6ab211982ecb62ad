"""`hgdeploy standin --resume`: a run stopped mid-way (an exception from the progress callback in
the library, SIGTERM to the CLI in a subprocess) and resumed ends with the uninterrupted run's
weights bit for bit; the stop leaves the latest state and no temporary file; each bad resume
input is refused in one line and left as it was."""

from __future__ import annotations

import copy
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_model

from hgdeploy.standin.detector_training import DetectorTrainConfig, prior_heads, train_detector
from hgdeploy.standin.training import Saving, read_resume, resume_file, run_settings

DETECTOR = DetectorTrainConfig(steps=4, batch=4, input_hw=(127, 127), warmup=1)
# hrnet: 3 steps at the reduced 128x96, the last at 256x192 (a resume crosses the phases)
POSE_ARGS = ["--model", "hrnet", "--steps", "4", "--full-steps", "1", "--batch", "4"]


class _Stop(Exception):
    """Raised by a progress callback: the library-level stand-in for an interrupted run."""


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def _temporaries(directory: Path) -> list[Path]:
    return [path for path in directory.iterdir() if path.name.endswith(".tmp")]


def _fresh_squeeze() -> torch.nn.Module:
    return prior_heads(copy.deepcopy(synthetic_model("squeeze")))  # the cache stays as is


@pytest.fixture(scope="module")
def detector_runs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Squeeze, 4 steps uninterrupted; and stopped after step 3 with states every 2 steps,
    then resumed from the state of step 2."""
    directory = tmp_path_factory.mktemp("detector")
    whole = train_detector("squeeze", DETECTOR, model=_fresh_squeeze())
    state = directory / "squeeze.pkl.resume.pt"

    def stop_after_3(done: int, total: int, loss: float) -> None:
        if done == 3:
            raise _Stop

    saving = Saving(state, every=2)
    with pytest.raises(_Stop):
        train_detector("squeeze", DETECTOR, model=_fresh_squeeze(), progress=stop_after_3,
                       saving=saving)  # fmt: skip
    start = read_resume(state, run_settings("squeeze", DETECTOR))
    resumed = train_detector("squeeze", DETECTOR, model=_fresh_squeeze(),
                             saving=Saving(state, every=2, start=start))  # fmt: skip
    return {"whole": whole, "resumed": resumed, "start": start, "state": state,
            "directory": directory}  # fmt: skip


def test_a_resumed_detector_run_ends_with_the_uninterrupted_weights(detector_runs: dict) -> None:
    whole, resumed = detector_runs["whole"], detector_runs["resumed"]
    assert detector_runs["start"]["step"] == 2  # the state of step 2: step 3 was never saved
    assert resumed.losses == whole.losses and len(whole.losses) == 4
    assert _same_weights(whole.model.state_dict(), resumed.model.state_dict())
    assert not resumed.model.training
    assert _temporaries(detector_runs["directory"]) == []


def _cli(args: list[str]) -> tuple[int, str, str]:
    from hgdeploy.cli import main

    result = CliRunner().invoke(main, args)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """HRNet through the CLI: a subprocess stopped with SIGTERM after its first resume state,
    resumed in-process; and the same run uninterrupted."""
    stopped, whole = tmp_path_factory.mktemp("stopped"), tmp_path_factory.mktemp("whole")
    output = stopped / "final_state.pth"
    state = resume_file(output)
    command = [sys.executable, "-c", "from hgdeploy.cli import main; main()", "standin",
               *POSE_ARGS, "--save-every", "1", "--output", str(output)]  # fmt: skip
    with (stopped / "log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not state.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
    assert code == 128 + signal.SIGTERM, (stopped / "log").read_text()
    assert not output.exists() and _temporaries(stopped) == []
    interrupted = stopped / "interrupted.resume.pt"  # kept for the bad-input tests
    interrupted.write_bytes(state.read_bytes())
    code, out, err = _cli(["standin", *POSE_ARGS, "--save-every", "1", "--output", str(output),
                           "--resume", str(state)])  # fmt: skip
    assert code == 0, out + err
    assert "resuming hrnet after step" in out
    code, out, err = _cli(["standin", *POSE_ARGS, "--output", str(whole / "final_state.pth")])
    assert code == 0, out + err
    return {"stopped": stopped, "output": output, "whole": whole / "final_state.pth",
            "interrupted": interrupted}  # fmt: skip


def test_a_run_stopped_with_sigterm_resumes_to_the_uninterrupted_weights(
    cli_runs: dict[str, Path],
) -> None:
    saved = torch.load(cli_runs["interrupted"], weights_only=True)
    assert 1 <= saved["step"] < 4 and len(saved["losses"]) == saved["step"]
    resumed = torch.load(cli_runs["output"], weights_only=True)
    whole = torch.load(cli_runs["whole"], weights_only=True)
    assert _same_weights(resumed, whole)
    finished = [torch.load(resume_file(cli_runs[run]), weights_only=True)
                for run in ("output", "whole")]  # fmt: skip
    assert all(marker["finished"] and "model_state" not in marker for marker in finished)
    assert finished[0]["losses"] == finished[1]["losses"]  # the whole loss curve, resumed too
    assert saved["losses"] == finished[0]["losses"][: saved["step"]]
    assert _temporaries(cli_runs["stopped"]) == []


def _bad_file(kind: str, cli_runs: dict[str, Path], detector_runs: dict, where: Path) -> Path:
    if kind == "another model":
        return detector_runs["state"]  # squeeze's (finished marker or not: the model decides)
    if kind == "finished":
        return resume_file(cli_runs["whole"])
    if kind == "not a resume state":
        return cli_runs["whole"]  # the checkpoint itself
    if kind == "missing":
        return where / "absent.resume.pt"
    path = where / f"{kind}.resume.pt"
    data = cli_runs["interrupted"].read_bytes()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else os.urandom(4096))
    return path


BAD = {
    "another model": ([], "is a resume state of squeeze, not hrnet"),
    "other settings": (["--steps", "5", "--batch", "6"], "steps 4 (this run: 5), batch 4 (this"),
    "finished": ([], "is a finished run (4/4 steps"),
    "truncated": ([], "is corrupt or truncated"),
    "garbage": ([], "is corrupt or truncated"),
    "not a resume state": ([], "is not a resume state of `hgdeploy standin`"),
    "missing": ([], "no such file"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_each_bad_resume_input_is_refused_in_one_line_and_left_as_it_was(
    kind: str, cli_runs: dict[str, Path], detector_runs: dict, tmp_path: Path
) -> None:
    extra, words = BAD[kind]
    path = cli_runs["interrupted"] if kind == "other settings" else None
    path = path or _bad_file(kind, cli_runs, detector_runs, tmp_path)
    before = hashlib.sha256(path.read_bytes()).digest() if path.exists() else None
    args = ["standin", *POSE_ARGS, *extra, "--output", str(tmp_path / "out.pth")]
    code, _, err = _cli([*args, "--resume", str(path)])
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and words in err, err
    assert "unexpected" not in err and "Traceback" not in err
    after = hashlib.sha256(path.read_bytes()).digest() if path.exists() else None
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not (tmp_path / "out.pth").exists()


def test_a_fresh_run_will_not_replace_an_earlier_runs_resume_state(
    cli_runs: dict[str, Path], tmp_path: Path
) -> None:
    output = tmp_path / "final_state.pth"
    resume_file(output).write_bytes(cli_runs["interrupted"].read_bytes())
    code, _, err = _cli(["standin", *POSE_ARGS, "--output", str(output)])
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "holds an earlier run's resume state" in err and "--resume" in err
    assert resume_file(output).read_bytes() == cli_runs["interrupted"].read_bytes()


def test_the_checkpoint_may_not_replace_the_resume_state_it_continues(
    cli_runs: dict[str, Path], tmp_path: Path
) -> None:
    state = tmp_path / "run.pth.resume.pt"
    state.write_bytes(cli_runs["interrupted"].read_bytes())
    code, _, err = _cli(["standin", *POSE_ARGS, "--output", str(state), "--resume", str(state),
                         "--force"])  # fmt: skip
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "is also the --resume input" in err
    assert state.read_bytes() == cli_runs["interrupted"].read_bytes()
