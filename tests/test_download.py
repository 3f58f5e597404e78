"""Model download against a local HTTP server: verify, resume with Range, refuse corrupt bytes."""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from engine.errors import DownloadError, ModelIntegrityError
from engine.models import ModelFile, ModelSpec, ModelStore, download

PAYLOAD = np.random.default_rng(7).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class ModelServer(ThreadingHTTPServer):
    daemon_threads = True
    payload: bytes = PAYLOAD
    cut_after: int | None = None  # send this many body bytes once, then drop the connection
    corrupt = False
    ignore_range = False
    ranges: list[str | None]


class Handler(BaseHTTPRequestHandler):
    server: ModelServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        srv = self.server
        requested = self.headers.get("Range")
        srv.ranges.append(requested)
        data = bytearray(srv.payload)
        if srv.corrupt:
            data[1000] ^= 0xFF
        start = 0
        if requested and not srv.ignore_range:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = bytes(data[start:])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cut_after is not None:
            cut, srv.cut_after = srv.cut_after, None
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[ModelServer]:
    srv = ModelServer(("127.0.0.1", 0), Handler)
    srv.ranges = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(5)


def make_store(tmp_path: Path, url: str | None, sha: str | None = SHA) -> ModelStore:
    spec = ModelSpec(
        name="net", family="restorer", arch="gfpgan", files=(ModelFile("model", "net.onnx", sha, url),)
    )
    return ModelStore(specs=(spec,), search_dirs=(tmp_path / "user",), user_dir=tmp_path / "user")


def url_of(srv: ModelServer) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/net.onnx"


def test_full_download_is_verified(tmp_path: Path, server: ModelServer) -> None:
    seen: list[tuple[int, int | None]] = []
    path = download(
        make_store(tmp_path, url_of(server)), "net", progress=lambda done, total: seen.append((done, total))
    )
    assert path == tmp_path / "user" / "net.onnx"
    assert path.read_bytes() == PAYLOAD
    assert not (tmp_path / "user" / "net.onnx.part").exists()
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert server.ranges == [None]
    # Present and verified: a second call does not fetch again.
    download(make_store(tmp_path, url_of(server)), "net")
    assert server.ranges == [None]


def test_interrupted_transfer_resumes_in_the_same_call(tmp_path: Path, server: ModelServer) -> None:
    server.cut_after = 100_000
    path = download(make_store(tmp_path, url_of(server)), "net", attempts=3)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=100000-"]


def test_interrupted_transfer_resumes_on_the_next_call(tmp_path: Path, server: ModelServer) -> None:
    server.cut_after = 123_456
    store = make_store(tmp_path, url_of(server))
    with pytest.raises(DownloadError, match=r"127\.0\.0\.1.*run again to resume"):
        download(store, "net", attempts=1)
    part = tmp_path / "user" / "net.onnx.part"
    assert part.stat().st_size == 123_456
    assert not (tmp_path / "user" / "net.onnx").exists()
    path = download(store, "net")
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.ranges == [None, "bytes=123456-"]


def test_server_ignoring_range_restarts_cleanly(tmp_path: Path, server: ModelServer) -> None:
    server.cut_after = 50_000
    server.ignore_range = True
    path = download(make_store(tmp_path, url_of(server)), "net")
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=50000-"]  # asked to resume, got a 200 with the whole file


def test_complete_part_file_and_416(tmp_path: Path, server: ModelServer) -> None:
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "net.onnx.part").write_bytes(PAYLOAD)
    path = download(make_store(tmp_path, url_of(server)), "net")
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_corrupted_file_is_refused_and_nothing_left(tmp_path: Path, server: ModelServer) -> None:
    server.corrupt = True
    bad = bytearray(PAYLOAD)
    bad[1000] ^= 0xFF
    got = hashlib.sha256(bad).hexdigest()
    with pytest.raises(ModelIntegrityError, match=f"sha256 mismatch: expected {SHA}, got {got}"):
        download(make_store(tmp_path, url_of(server)), "net")
    assert list((tmp_path / "user").iterdir()) == []


def test_network_error_and_missing_url(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=f"127.0.0.1:{port}"):
        download(make_store(tmp_path, f"http://127.0.0.1:{port}/net.onnx"), "net", attempts=1, timeout=5)
    with pytest.raises(DownloadError, match="no download address known"):
        download(make_store(tmp_path, None), "net")


def test_http_error_status(tmp_path: Path, server: ModelServer) -> None:
    url = url_of(server).replace("/net.onnx", "/missing")

    class NotFound(Handler):
        def do_GET(self) -> None:
            self.send_error(404)

    server.RequestHandlerClass = NotFound
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(make_store(tmp_path, url), "net")
