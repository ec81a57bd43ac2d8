"""Fixtures for the `rustorch serve` tests: servers started from target/release/rustorch.

The session server runs the default model (SmolLM2-135M-Instruct Q4_1, fetched by
scripts/fetch-models.sh) with 8 parallel sequences on 2 threads; `start_server` starts more servers
with other flags (--api-key, --queue, --alias) for one test. Every server is stopped with SIGTERM and
must exit 0 within 20 s.
"""

import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import openai
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("RUSTORCH_BIN", REPO / "target" / "release" / "rustorch"))
# The model's id in /v1/models: the file name without `.gguf`.
MODEL_ID = "SmolLM2-135M-Instruct.Q4_1"
# SmolLM2's training context: the most one request may use (`rustorch inspect` prints it).
MODEL_CTX = 8192
DEFAULT_ARGS = ["--parallel", "8", "-t", "2", "-c", "16384"]
START_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0


class Server:
    """A `rustorch serve` process on a free port."""

    def __init__(self, args):
        assert BINARY.exists(), f"{BINARY} is missing: build it with `cargo build --release -p rustorch`"
        self.args = [str(BINARY), "serve", "--port", "0", *args]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL
        )
        self.url = None
        self.health_seen = []  # (status, body) of every /health answer while waiting
        try:
            self.url = self._read_url()
            self._wait_healthy()
        except BaseException:
            self.proc.kill()
            self.proc.wait()
            raise
        # Keep reading stdout so that the server never blocks on a full pipe.
        self._drain = threading.Thread(target=self.proc.stdout.read, daemon=True)
        self._drain.start()

    def stderr_text(self):
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def _fail(self, why):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        pytest.fail(f"{' '.join(self.args)}: {why}\n--- server stderr ---\n{self.stderr_text()}")

    def _read_url(self):
        line = []

        def read():
            line.append(self.proc.stdout.readline())

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or not line[0]:
            self._fail(f"no first line on stdout (exit code {self.proc.poll()})")
        text = line[0].decode().rstrip("\n")
        prefix = "listening on http://"
        if not text.startswith(prefix):
            self._fail(f"the first line on stdout is {text!r}, not {prefix}HOST:PORT")
        host, _, port = text[len(prefix):].rpartition(":")
        if not host or not port.isdigit() or int(port) == 0:
            self._fail(f"the first line on stdout is {text!r}: no host and port")
        return f"http://{host}:{port}"

    def _wait_healthy(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode} before /health answered 200")
            try:
                r = requests.get(self.url + "/health", timeout=5)
            except requests.ConnectionError as e:
                self._fail(f"/health: the bound socket refused a connection: {e}")
            except requests.Timeout:
                continue
            self.health_seen.append((r.status_code, r.text))
            if r.status_code == 200:
                assert r.json() == {"status": "ok"}, r.text
                return
            # While the model loads: 503 {"status": "loading"}, nothing else.
            if r.status_code != 503 or r.json() != {"status": "loading"}:
                self._fail(f"/health answered {r.status_code} {r.text!r} while loading")
            time.sleep(0.05)
        self._fail(f"/health did not answer 200 within {START_TIMEOUT:.0f} s")

    def stop(self):
        """SIGTERM; the process must exit 0 within STOP_TIMEOUT seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                pytest.fail(
                    f"{' '.join(self.args)}: still running {STOP_TIMEOUT:.0f} s after SIGTERM\n"
                    f"--- server stderr ---\n{self.stderr_text()}"
                )
        code = self.proc.returncode
        assert code == 0, (
            f"{' '.join(self.args)}: exit code {code} after SIGTERM\n"
            f"--- server stderr ---\n{self.stderr_text()}"
        )


@pytest.fixture(scope="session")
def server():
    s = Server(DEFAULT_ARGS)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def server_url(server):
    return server.url


@pytest.fixture
def start_server():
    """Starts a server with the default model, `-t 2` and the given flags; returns its Server.
    Each is stopped (SIGTERM, exit code 0) at the end of the test."""
    started = []

    def start(*args):
        s = Server(["-t", "2", *args])
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def make_client(url, api_key="x"):
    # No retries: a 429 or 5xx must reach the test as the client raises it.
    return openai.OpenAI(base_url=url + "/v1", api_key=api_key, max_retries=0, timeout=300)


@pytest.fixture(scope="session")
def client(server_url):
    return make_client(server_url)


@pytest.fixture(scope="session")
def model_id():
    return MODEL_ID
