"""Every error status of `rustorch serve`, as the official client raises it (raw HTTP where the
client cannot send the request): 400, 401, 404, 413, 429; and errors in OpenAI's shape."""

import json
import re
import threading

import openai
import pytest
import requests

from conftest import MODEL_CTX, MODEL_ID as MODEL, make_client
from serverlib import no_eos_bias, raw_request, tokenize, wait_metric

BODY_LIMIT = 8 << 20


def user(text):
    return [{"role": "user", "content": text}]


def error_of(r, status):
    """The OpenAI-shaped error of a raw answer."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    e = r.json()["error"]
    assert isinstance(e["message"], str) and e["message"]
    assert isinstance(e["type"], str) and e["type"]
    assert "param" in e and "code" in e
    return e


def test_malformed_json_400(server_url):
    for path in ("/v1/chat/completions", "/v1/completions"):
        r = requests.post(
            server_url + path, data=b'{"messages": [{"role": "user", "content": "hi"}', timeout=30,
            headers={"Content-Type": "application/json"},
        )
        e = error_of(r, 400)
        assert "JSON" in e["message"]
        r = requests.post(server_url + path, data=b"not json at all", timeout=30, headers={"Content-Type": "application/json"})
        error_of(r, 400)


def test_wrongly_typed_field_400_names_it(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("hi"), temperature="hot")
    assert e.value.status_code == 400
    assert "temperature" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt="hi", max_tokens="many")
    assert "max_tokens" in e.value.message
    # A field deep inside the messages is named by its path.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": 42}])
    assert "messages[0]" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stop=[1, 2])
    assert "stop" in e.value.message


def test_missing_or_bad_fields_400(client, server_url):
    r = requests.post(server_url + "/v1/chat/completions", json={"model": MODEL}, timeout=30)
    assert "messages" in error_of(r, 400)["message"]
    r = requests.post(server_url + "/v1/completions", json={"model": MODEL}, timeout=30)
    assert "prompt" in error_of(r, 400)["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[])
    assert "messages" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("hi"), temperature=-1)
    assert "temperature" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "hi"}])
    assert "role" in e.value.message
    # A stop string is checked against each token's text: a huge one is refused, not scanned.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("hi"), stop=["x" * 5000])
    assert "stop" in e.value.message


def test_prompt_longer_than_context_400(client, server_url):
    prompt = "hello world " * (MODEL_CTX // 2 + 500)
    n = len(tokenize(server_url, prompt, add_special=True))
    assert n > MODEL_CTX
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=4)
    msg = e.value.message
    assert str(n) in msg and str(MODEL_CTX) in msg, msg
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user(prompt), max_tokens=4)
    msg = e.value.message
    counts = [int(x) for x in re.findall(r"\d+", msg)]
    assert MODEL_CTX in counts and any(c > n for c in counts), msg
    # The server is still fine.
    r = client.completions.create(model=MODEL, prompt="hello", max_tokens=2)
    assert r.usage.completion_tokens >= 1


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-17-ultra", messages=user("hi"), max_tokens=2)
    assert e.value.status_code == 404
    assert "gpt-17-ultra" in e.value.message
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-17-ultra", prompt="hi", max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-17-ultra")


def test_api_key_401(start_server):
    s = start_server("--parallel", "1", "--api-key", "sekrit-key")
    with pytest.raises(openai.AuthenticationError) as e:
        make_client(s.url, api_key="wrong-key").chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=2)
    assert e.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        make_client(s.url, api_key="wrong-key").models.list()
    # No key at all (raw: the client always sends one).
    for path, body in (("/v1/chat/completions", {"messages": user("hi")}), ("/v1/completions", {"prompt": "hi"})):
        error_of(requests.post(s.url + path, json=body, timeout=30), 401)
    error_of(requests.get(s.url + "/v1/models", timeout=30), 401)
    error_of(requests.post(s.url + "/tokenize", json={"content": "hi"}, timeout=30), 401)
    # The right key works.
    good = make_client(s.url, api_key="sekrit-key")
    assert [m.id for m in good.models.list().data] == [MODEL]
    r = good.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=3)
    assert r.usage.completion_tokens >= 1
    # /health stays open for load balancers.
    assert requests.get(s.url + "/health", timeout=30).status_code == 200


def test_queue_full_429(start_server):
    s = start_server("--parallel", "1", "--queue", "1")
    bias = no_eos_bias(s.url)
    results = []
    barrier = threading.Barrier(6)

    def fire():
        barrier.wait()
        r = requests.post(
            s.url + "/v1/completions",
            json={"prompt": "Count to one hundred:", "max_tokens": 60, "temperature": 0, "logit_bias": bias},
            timeout=120,
        )
        results.append(r)

    threads = [threading.Thread(target=fire) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = sorted(r.status_code for r in results)
    # One runs, one waits, the others are refused.
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    assert set(statuses) <= {200, 429}, statuses
    for r in results:
        if r.status_code == 429:
            e = error_of(r, 429)
            assert int(r.headers["retry-after"]) >= 1, r.headers
            assert e["type"]
        else:
            assert r.json()["usage"]["completion_tokens"] == 60
    # The client raises RateLimitError while one request runs and one waits.
    def hold(n):
        r = requests.post(
            s.url + "/v1/completions",
            json={"prompt": "Count:", "max_tokens": n, "temperature": 0, "logit_bias": bias}, timeout=120,
        )
        assert r.status_code == 200, r.text

    running = threading.Thread(target=hold, args=(400,))
    running.start()
    wait_metric(s.url, "rustorch_sequences_running", 1)
    waiting = threading.Thread(target=hold, args=(10,))
    waiting.start()
    wait_metric(s.url, "rustorch_sequences_waiting", 1)
    with pytest.raises(openai.RateLimitError) as e:
        make_client(s.url).completions.create(model=MODEL, prompt="hi", max_tokens=2)
    assert e.value.status_code == 429
    assert int(e.value.response.headers["retry-after"]) >= 1
    running.join(120)
    waiting.join(120)


def test_queue_not_full_is_not_429(start_server):
    """--parallel 1 --queue 1 holds two requests: two that arrive together at an idle server both
    succeed (one runs, one waits), whichever the engine sees first."""
    s = start_server("--parallel", "1", "--queue", "1")
    for trial in range(5):
        results = []
        barrier = threading.Barrier(2)

        def fire():
            barrier.wait()
            r = requests.post(
                s.url + "/v1/completions", json={"prompt": "Count:", "max_tokens": 8, "temperature": 0}, timeout=60
            )
            results.append((r.status_code, r.text[:200]))

        threads = [threading.Thread(target=fire) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [st for st, _ in results] == [200, 200], f"trial {trial}: {results}"


def test_body_over_limit_413(server_url):
    host = server_url.split("//")[1]
    big = b'{"prompt": "' + b"a" * (BODY_LIMIT + 1024) + b'"}'
    # Announced by Content-Length.
    status, headers, body = raw_request(
        server_url,
        ["POST /v1/completions HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
         f"Content-Length: {len(big)}", "Connection: close"],
        [big[i: i + 65536] for i in range(0, len(big), 65536)],
    )
    assert status == 413, (status, body[:300])
    # Chunked, with no length announced: refused once it grows past the limit.
    chunks = [b"%x\r\n%s\r\n" % (len(c), c) for c in (big[i: i + 65536] for i in range(0, len(big), 65536))]
    status, headers, body = raw_request(
        server_url,
        ["POST /v1/chat/completions HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
         "Transfer-Encoding: chunked", "Connection: close"],
        chunks + [b"0\r\n\r\n"],
    )
    assert status == 413, (status, body[:300])
    # Through requests (the usual client), the error in OpenAI's shape.
    try:
        r = requests.post(server_url + "/v1/completions", data=big, headers={"Content-Type": "application/json"}, timeout=60)
    except requests.ConnectionError:
        pass  # the server may close before the whole body is sent
    else:
        assert "MiB" in error_of(r, 413)["message"]


def test_body_just_under_limit_is_read(server_url):
    """A body below the limit is parsed (a 400 about the field, not a 413)."""
    body = json.dumps({"prompt": "hi", "max_tokens": "x", "padding": "a" * (BODY_LIMIT - 4096)})
    r = requests.post(server_url + "/v1/completions", data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert "max_tokens" in error_of(r, 400)["message"]


def test_tools_400(client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("Weather?"), tools=tools)
    assert "tools" in e.value.message
    assert e.value.param == "tools"


def test_response_format_json_schema_400(client):
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("JSON please"), response_format=schema)
    assert "response_format" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=user("JSON please"), response_format={"type": "json_object"})
    assert "response_format" in e.value.message
    # Plain text is what the server does anyway: accepted.
    r = client.chat.completions.create(model=MODEL, messages=user("Hi"), response_format={"type": "text"}, max_tokens=2)
    assert r.choices[0].message.content is not None


def test_unknown_endpoint_404(server_url):
    error_of(requests.get(server_url + "/v1/nothing-here", timeout=30), 404)
