"""Shared fixtures: a tiny corpus and configs, temporary data/runs folders, a local server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import threading
import time
from pathlib import Path

import pytest
import torch

from toygpt_cli.config import ModelConfig, TrainConfig

# Tiny models gain nothing from a second thread, and with other work on the machine
# OpenMP's spinning threads make each op hundreds of times slower.
torch.set_num_threads(1)

# The first 200,000 characters of Tiny Shakespeare (public domain), shipped with the tests so
# that they never depend on anything outside the repository.
FIXTURE_CORPUS = Path(__file__).resolve().parent / "data" / "shakespeare_200k.txt"


def _tiny_text() -> str:
    return FIXTURE_CORPUS.read_text(encoding="utf-8")[:30_000]


@pytest.fixture(scope="session")
def tiny_text() -> str:
    return _tiny_text()


@pytest.fixture
def corpus_file(tmp_path, tiny_text) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text, encoding="utf-8")
    return path


@pytest.fixture
def tiny_model() -> ModelConfig:
    return ModelConfig(block_size=16, n_embd=32, n_layer=2, n_head=4, dropout=0.1)


@pytest.fixture
def tiny_train() -> TrainConfig:
    return TrainConfig(iters=60, eval_interval=20, eval_iters=4, batch_size=16, sample_chars=40)


TINY_ARGS = [
    "--n-embd",
    "32",
    "--n-layer",
    "2",
    "--n-head",
    "4",
    "--block-size",
    "16",
    "--batch-size",
    "16",
    "--eval-iters",
    "4",
    "--sample-chars",
    "40",
]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    """Point TOYGPT_DATA_DIR / TOYGPT_RUNS_DIR at temporary folders."""
    data, runs = tmp_path / "data", tmp_path / "runs"
    monkeypatch.setenv("TOYGPT_DATA_DIR", str(data))
    monkeypatch.setenv("TOYGPT_RUNS_DIR", str(runs))
    monkeypatch.setenv("CI", "1")  # plain log lines, no live progress
    return data, runs


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: dict[str, int] = {}
    encoded: set[str] = set()  # routes whose body is gzip-compressed (Content-Encoding)

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = self.path
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/flaky.txt" and self.hits[path] == 1:
            self.send_error(500)
            return
        if path == "/always500.txt":
            self.send_error(503)
            return
        body = self.files.get(path.replace("/flaky.txt", "/input.txt"))
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        if path in self.encoded:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))  # what is sent: compressed
        self.end_headers()
        if path == "/cut.txt":
            self.wfile.write(body[: len(body) // 2])  # then close: a cut-off transfer
            self.wfile.flush()
            self.close_connection = True
            return
        if path == "/drip.txt":  # one byte at a time, slowly, until the client gives up
            for byte in body[:100]:
                try:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                except OSError:
                    return
                time.sleep(0.2)
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server(tiny_text):
    """A server on 127.0.0.1 serving the tiny corpus as /input.txt, plus misbehaving routes:
    /flaky.txt (500 once, then the file), /always500.txt, /cut.txt (closes mid-body),
    /wrong.txt (other bytes than /input.txt), /gzip.txt (the corpus gzip-encoded, with the
    compressed Content-Length), /bomb.txt (8 KB of gzip that inflates to 8 MiB of text),
    /latin1.txt (not UTF-8), /nul.txt (NUL bytes), /drip.txt (a byte every 0.2 s)."""
    body = tiny_text.encode()
    _Handler.files = {
        "/input.txt": body,
        "/cut.txt": body,
        "/wrong.txt": body[::-1],
        "/gzip.txt": gzip.compress(body),
        "/bomb.txt": gzip.compress(b"a" * (8 << 20)),
        "/latin1.txt": "caf\xe9 cr\xe8me\n".encode("latin-1") * 100,
        "/nul.txt": b"text\x00more\n" * 100,
        "/drip.txt": body,
    }
    _Handler.encoded = {"/gzip.txt", "/bomb.txt"}
    _Handler.hits = {}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield {
        "base": base,
        "sha256": hashlib.sha256(body).hexdigest(),
        "body": body,
        "hits": _Handler.hits,
    }
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    """The CLI, run in-process, ignores SIGINT/SIGTERM on its way out of an interrupted
    training (as a process about to exit should); keep that from leaking into later tests
    and into the processes they start."""
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
