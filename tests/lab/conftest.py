"""Fixtures for the lab's own tooling: fake executables on a PATH of their own, and a loopback HTTP server."""

from __future__ import annotations

import http.server
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """urllib would send even 127.0.0.1 through a proxy named in the environment."""
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


class FakeBin:
    """A folder of shell scripts standing in for docker, kind, kubectl and pulumi."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, body: str) -> Path:
        path = self.folder / name
        path.write_text("#!/bin/sh\n" + body.strip() + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return path

    @property
    def path(self) -> str:
        return str(self.folder)


@pytest.fixture
def fake_bin(tmp_path) -> FakeBin:
    return FakeBin(tmp_path / "bin")


@dataclass
class Served:
    """What the server answers: path -> body; a path in ``short`` promises more bytes than it sends."""

    files: dict[str, bytes] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)  # path -> Content-Length promised
    requests: list[str] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def server():
    served = Served()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's spelling)
            served.requests.append(self.path)
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(served.short.get(self.path, len(body))))
            self.end_headers()
            self.wfile.write(body)
            if self.path in served.short:
                self.close_connection = True  # hang up before the promised length

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
