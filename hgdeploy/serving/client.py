"""A small Triton HTTP/REST client on the standard library (KServe v2 protocol + Triton's binary
tensor extension).

tritonclient is not a project dependency: its current release needs protobuf < 7, which onnx's
protobuf 7 rules out in the project's environment. The protocol is small enough to speak here:
a JSON header, then each tensor's raw bytes, with `Inference-Header-Content-Length` saying where
the JSON ends. Every call has a timeout. Inference requests go over one kept-alive connection
per thread (as perf_analyzer's clients do): a new TCP connection and urllib's opener per request
cost CPU that a load test on a small machine takes from the server it measures.
"""

from __future__ import annotations

import http.client
import json
import struct
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from hgdeploy.base.errors import HgDeployError

HEADER_LENGTH = "Inference-Header-Content-Length"
_DTYPES = {"FP32": np.float32, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16}
_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


class InferError(HgDeployError):
    """The server answered an inference request with an error (the server itself is up)."""


@dataclass
class TritonHttp:
    url: str  # e.g. http://127.0.0.1:8000
    timeout: float = 60.0
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def get(self, path: str) -> tuple[int, bytes]:
        """(status, body) of a GET; (0, b"") when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=self.timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, b""

    def ready(self) -> bool:
        return self.get("/v2/health/ready")[0] == 200

    def stats(self, model: str) -> dict[str, Any]:
        status, body = self.get(f"/v2/models/{model}/stats")
        if status != 200:
            raise HgDeployError(f"no statistics for {model}: HTTP {status} {body[:200]!r}")
        return json.loads(body)["model_stats"][0]

    def batch_sizes(self, model: str) -> dict[int, int]:
        """Batch size -> how many times the model executed a batch of that size."""
        stats = self.stats(model)
        return {
            int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats.get("batch_stats", [])
        }

    def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        outputs: list[str],
        request_id: str | None = None,
    ) -> dict[str, np.ndarray]:
        """Run `model` on `inputs` (object arrays of bytes are BYTES tensors); its `outputs`."""
        header: dict[str, Any] = {"inputs": [], "outputs": []}
        if request_id is not None:
            header["id"] = request_id
        blobs = []
        for name, array in inputs.items():
            datatype, blob = _encode(array)
            header["inputs"].append(
                {"name": name, "shape": list(array.shape), "datatype": datatype,
                 "parameters": {"binary_data_size": len(blob)}}
            )  # fmt: skip
            blobs.append(blob)
        header["outputs"] = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
        text = json.dumps(header).encode()
        headers = {HEADER_LENGTH: str(len(text)), "Content-Type": "application/octet-stream"}
        status, length, body = self._post(
            f"/v2/models/{model}/infer", text + b"".join(blobs), headers
        )
        if status != 200:
            raise InferError(f"{model}: HTTP {status}: {_error_text(body)}")
        return _decode(body, int(length) if length is not None else len(body))

    def _post(
        self, path: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int, str | None, bytes]:
        """(status, header-length header, body) over this thread's kept-alive connection. A
        connection the server closed while idle is found when sending on it (nothing was
        answered, so nothing ran twice): that one request is sent again on a new connection
        (which is not reused, so this loops at most twice)."""
        while True:
            connection, reused = self._connection()
            try:
                connection.request("POST", path, body=data, headers=headers)
                response = connection.getresponse()
                body = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if reused:
                    continue
                raise HgDeployError(f"no answer from {self.url}: {exc}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise HgDeployError(f"no answer from {self.url}: {exc}") from None
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, response.getheader(HEADER_LENGTH), body

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        """This thread's connection and whether it carried a request before."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            return connection, True
        parts = urlsplit(self.url)
        connection = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=self.timeout
        )
        self._local.connection = connection
        return connection, False

    def close(self) -> None:
        """Close this thread's connection (the next request opens a new one)."""
        connection = getattr(self._local, "connection", None)
        if connection is not None:
            connection.close()
            self._local.connection = None


def _encode(array: np.ndarray) -> tuple[str, bytes]:
    if array.dtype == object or array.dtype.kind in "SU":
        items = [x if isinstance(x, bytes) else str(x).encode() for x in array.reshape(-1)]
        return "BYTES", b"".join(struct.pack("<I", len(x)) + x for x in items)
    array = np.ascontiguousarray(array)
    if array.dtype not in _NAMES:
        raise HgDeployError(f"unsupported tensor type {array.dtype}")
    return _NAMES[array.dtype], array.tobytes()


def _decode(body: bytes, header_length: int) -> dict[str, np.ndarray]:
    header = json.loads(body[:header_length])
    offset = header_length
    result = {}
    for output in header.get("outputs", []):
        shape, datatype = output["shape"], output["datatype"]
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:  # sent as JSON
            data = output["data"]
            result[output["name"]] = np.asarray(data, dtype=_DTYPES.get(datatype, object))
            result[output["name"]] = result[output["name"]].reshape(shape)
            continue
        blob = body[offset : offset + size]
        offset += size
        if datatype == "BYTES":
            items, at = [], 0
            while at < len(blob):
                (n,) = struct.unpack_from("<I", blob, at)
                items.append(blob[at + 4 : at + 4 + n])
                at += 4 + n
            result[output["name"]] = np.array(items, dtype=object).reshape(shape)
        else:
            result[output["name"]] = np.frombuffer(blob, dtype=_DTYPES[datatype]).reshape(shape)
    return result


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body[:200]))
    except ValueError:
        return body[:200].decode(errors="replace")
