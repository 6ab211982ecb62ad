"""Starting and stopping a real `tritonserver` on a model repository.

The binary: `$HGDEPLOY_TRITONSERVER`, else the one `make install` unpacks into `.venv-triton`
(from the nvidia-pytriton wheel, python backend only), else `tritonserver` on PATH. With the
bundled one, `.venv-triton/bin` goes first on PATH: the python backend's stub runs in the
Python it finds there (numpy < 2; numpy 2 corrupts tensors silently).

Bound to 127.0.0.1 unless told otherwise; every model loaded at start (explicit model control,
`--load-model *`), `--strict-readiness` so "ready" means every model is, `--exit-on-error` so a
model that fails to load stops the server, and `--exit-timeout-secs 5` (the default 30 s makes
a shutdown with a crashed stub take half a minute). Readiness is awaited with a deadline: a
python model that fails inside its stub can leave the server up but never ready.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hgdeploy.base.errors import HgDeployError
from hgdeploy.serving.client import TritonHttp

SERVER_ENV = Path(__file__).resolve().parents[2] / ".venv-triton"
BUNDLED_HOME = SERVER_ENV / "tritonserver" / "pytriton" / "tritonserver"
BINARY_ENV = "HGDEPLOY_TRITONSERVER"
EXIT_TIMEOUT_S = 5
STOP_GRACE_S = 20  # after SIGTERM: models unload, stubs exit; then the process group is killed
KILLED_WAIT_S = 10  # a killed stub can take seconds to leave (freeing its memory on busy cores)


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls, host: str = "127.0.0.1") -> Ports:
        """Three ports nothing listens on now (for tests: several servers never collide)."""
        sockets = [socket.socket() for _ in range(3)]
        try:
            for s in sockets:
                s.bind((host, 0))
            return cls(*(s.getsockname()[1] for s in sockets))
        finally:
            for s in sockets:
                s.close()


DEFAULT_BACKENDS = Path("/opt/tritonserver/backends")  # where Triton's own images keep them
NATIVE_BACKEND_DIRS = {"onnxruntime": "onnxruntime", "openvino": "openvino",
                       "tensorrt": "tensorrt"}  # fmt: skip


@dataclass(frozen=True)
class ServerInstall:
    binary: Path
    python_bin: Path | None  # put first on PATH for the python backend's stub
    backends: Path | None  # --backend-directory

    def has_backend(self, backend: str) -> bool:
        """Whether this server can run an hgdeploy backend's artifact natively (its backend
        library is in the server's backend directory)."""
        directory = self.backends or DEFAULT_BACKENDS
        return (directory / NATIVE_BACKEND_DIRS[backend]).is_dir()


def find_tritonserver() -> ServerInstall:
    """Where tritonserver is, or one line saying how to get it."""
    given = os.environ.get(BINARY_ENV)
    if given:
        if not Path(given).is_file():
            raise HgDeployError(f"${BINARY_ENV} names {given}, which does not exist")
        return ServerInstall(Path(given), None, None)
    bundled = BUNDLED_HOME / "bin" / "tritonserver"
    if bundled.is_file():
        return ServerInstall(bundled, SERVER_ENV / "bin", BUNDLED_HOME / "backends")
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerInstall(Path(on_path), None, None)
    raise HgDeployError(
        f"no tritonserver: not on PATH and no server environment at {SERVER_ENV} "
        "(`make install` creates it)"
    )


class TritonServer:
    def __init__(
        self,
        repository: Path,
        host: str = "127.0.0.1",
        ports: Ports = Ports(),
        log: Path | None = None,
    ) -> None:
        self.repository = Path(repository)
        self.host = host
        self.ports = ports
        self.log = log
        self.process: subprocess.Popen | None = None
        self.install = find_tritonserver()

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    def command(self) -> list[str]:
        p, h = self.ports, self.host
        command = [
            str(self.install.binary),
            f"--model-repository={self.repository.resolve()}",
            f"--http-address={h}", f"--http-port={p.http}",
            f"--grpc-address={h}", f"--grpc-port={p.grpc}",
            f"--metrics-address={h}", f"--metrics-port={p.metrics}",
            "--exit-on-error=true", "--strict-readiness=true",
            "--model-control-mode=explicit", "--load-model=*",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
        ]  # fmt: skip
        if self.install.backends is not None:
            command.append(f"--backend-directory={self.install.backends}")
        return command

    def start(self) -> None:
        if not self.repository.is_dir():
            raise HgDeployError(f"model repository not found: {self.repository}")
        for label, port in (("HTTP", self.ports.http), ("GRPC", self.ports.grpc),
                            ("metrics", self.ports.metrics)):  # fmt: skip
            _check_free(label, self.host, port)
        env = dict(os.environ)
        if self.install.python_bin is not None:
            env["PATH"] = f"{self.install.python_bin}{os.pathsep}{env.get('PATH', '')}"
            env.pop("PYTHONPATH", None)  # the stub must import the server env's packages
        output = open(self.log, "wb") if self.log is not None else None  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=output, stderr=subprocess.STDOUT if output else None,
                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        finally:
            if output is not None:
                output.close()

    def wait_ready(self, timeout: float) -> None:
        """Return once every model is loaded; raise (one line) when the server exits or the
        deadline passes first."""
        client = TritonHttp(self.http_url, timeout=2)
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise HgDeployError(f"tritonserver exited with status {code}: {self._reason()}")
            if client.ready():
                return
            time.sleep(0.25)
        raise HgDeployError(f"tritonserver was not ready within {timeout:g} s: {self._reason()}")

    def stop(self) -> None:
        """SIGTERM, wait for Triton's own shutdown, then kill whatever of its process group is
        left (python stubs included), so nothing outlives the server."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        _await_group_gone(self.process.pid, KILLED_WAIT_S)

    def _reason(self) -> str:
        """The log's most telling line: the last error, else the last line."""
        if self.log is None or not self.log.is_file():
            return "see its output above"
        lines = [
            ln.strip() for ln in self.log.read_text(errors="replace").splitlines() if ln.strip()
        ]
        errors = [ln for ln in lines if ln.startswith("E") or "error" in ln.lower()]
        return (errors or lines or ["no output"])[-1][:500] + f" (log: {self.log})"


def _await_group_gone(group: int, timeout: float) -> None:
    """Return once no process of `group` is left (or after `timeout`): SIGKILL is delivered at
    once but a stub orphaned by the server's exit leaves only when the kernel has torn it down,
    so "nothing outlives the server" holds when `stop` returns, not some time after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)


def _check_free(label: str, host: str, port: int) -> None:
    """Refuse a busy port now: tritonserver says so only after every model has loaded."""
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            raise HgDeployError(f"{label} port {port} on {host} is in use") from None


@contextlib.contextmanager
def running_server(
    repository: Path,
    *,
    host: str = "127.0.0.1",
    ports: Ports = Ports(),
    log: Path | None = None,
    ready_timeout: float = 300.0,
) -> Iterator[TritonServer]:
    """A started, ready server; stopped when the block ends, however it ends."""
    server = TritonServer(repository, host, ports, log)
    server.start()
    try:
        server.wait_ready(ready_timeout)
        yield server
    finally:
        server.stop()
