"""Helpers shared by the server tests: raw HTTP, SSE streams, /tokenize, /metrics."""

import json
import re
import socket
import time
from urllib.parse import urlsplit

import requests


def tokenize(url, content, add_special=False, parse_special=True):
    r = requests.post(
        url + "/tokenize",
        json={"content": content, "add_special": add_special, "parse_special": parse_special},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    tokens = r.json()["tokens"]
    assert isinstance(tokens, list) and all(isinstance(t, int) for t in tokens), r.text
    return tokens


def detokenize(url, tokens):
    r = requests.post(url + "/detokenize", json={"tokens": tokens}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["content"]


def special_id(url, text):
    ids = tokenize(url, text, parse_special=True)
    assert len(ids) == 1, f"{text!r} is not one control token: {ids}"
    return ids[0]


def no_eos_bias(url):
    """logit_bias that bans SmolLM2's end tokens, so that generation runs to max_tokens."""
    return {str(special_id(url, t)): -100 for t in ("<|im_end|>", "<|endoftext|>")}


# name, {labels} (label values are quoted and may hold braces or escaped quotes), value.
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[^"}]|"(?:[^"\\]|\\.)*")*\})?\s+(\S+)$')


def metrics(url):
    """GET /metrics as {name: {labels: value}} (labels: the raw `{...}` text, '' for none)."""
    r = requests.get(url + "/metrics", timeout=30)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    out = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        out.setdefault(m.group(1), {})[m.group(2) or ""] = float(m.group(3))
    return out


def metric(ms, name):
    """The sum of a metric's samples over all labels."""
    assert name in ms, f"/metrics has no {name}; it has {sorted(ms)}"
    return sum(ms[name].values())


def wait_metric(url, name, value, timeout=5.0):
    """Polls /metrics until the metric equals value (the engine's gauges are updated by its own
    thread, a moment after a stream's last event); returns the metrics."""
    deadline = time.monotonic() + timeout
    while True:
        ms = metrics(url)
        if metric(ms, name) == value:
            return ms
        assert time.monotonic() < deadline, f"{name} is {metric(ms, name)}, not {value}, after {timeout} s"
        time.sleep(0.01)


def sse_events(lines):
    """Parses SSE `data:` lines into JSON objects; checks the stream ends with [DONE]."""
    events, done = [], False
    for raw in lines:
        line = raw.decode() if isinstance(raw, bytes) else raw
        if not line.strip():
            continue
        assert not done, f"data after [DONE]: {line!r}"
        assert line.startswith("data: "), f"not an SSE data line: {line!r}"
        payload = line[len("data: "):]
        if payload == "[DONE]":
            done = True
            continue
        events.append(json.loads(payload))
    assert done, "the stream did not end with data: [DONE]"
    return events


class TimedStream:
    """A streaming POST read with requests; records when each SSE event arrived."""

    def __init__(self, url, path, body, timeout=300):
        self.resp = requests.post(url + path, json=body, stream=True, timeout=timeout)
        self.status = self.resp.status_code
        self.events = []  # (time.perf_counter(), event JSON)
        self.done = False

    def run(self, stop=None):
        """Reads events until [DONE] (or until stop() is true after an event; then closes)."""
        assert self.status == 200, self.resp.text
        # chunk_size=None: each chunk as it arrives, so the times are the arrival times.
        for raw in self.resp.iter_lines(chunk_size=None):
            if not raw.strip():
                continue
            t = time.perf_counter()
            line = raw.decode()
            assert line.startswith("data: "), line
            if line == "data: [DONE]":
                self.done = True
                break
            self.events.append((t, json.loads(line[6:])))
            if stop is not None and stop():
                break
        self.resp.close()


class RawStream:
    """A streaming request on a plain socket, so that the test decides when the connection closes."""

    def __init__(self, url, path, body):
        u = urlsplit(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=60)
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
            f"Accept: text/event-stream\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + data)
        self.buf = b""

    def read_until_events(self, n):
        """Reads until n `data: {` events have arrived; returns the bytes read so far."""
        while self.buf.count(b"data: {") < n:
            chunk = self.sock.recv(65536)
            assert chunk, f"the server closed the stream early: {self.buf[-2000:]!r}"
            self.buf += chunk
        assert self.buf.startswith(b"HTTP/1.1 200"), self.buf[:500]
        return self.buf

    def close(self):
        self.sock.close()


def raw_request(url, head_lines, body_chunks, read_timeout=60):
    """Sends a request of the given header lines and body chunks on a socket (the body from a
    thread, ignoring a server that closes early) and returns (status, headers, body) of the answer."""
    import threading

    u = urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout=read_timeout)
    sock.sendall(("\r\n".join(head_lines) + "\r\n\r\n").encode())

    def send():
        try:
            for c in body_chunks:
                sock.sendall(c)
        except OSError:
            pass  # the server answered and closed before reading the whole body

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    except ConnectionResetError:
        pass
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    assert lines and lines[0].startswith("HTTP/1."), f"no HTTP answer: {buf[:500]!r}"
    status = int(lines[0].split()[1])
    headers = {}
    for h in lines[1:]:
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    sock.close()
    return status, headers, body
