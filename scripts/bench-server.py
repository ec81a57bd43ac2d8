#!/usr/bin/env python3
"""Load test for any OpenAI-compatible chat server (rustorch serve, llama-server, ...).

At each concurrency level C it sends --requests streaming chat requests, C at a time
(asyncio + the official `openai` client), cycling through four short fixed prompts,
temperature 0, max_tokens --max-tokens. Per level it reports:
  - gen tok/s: the sum of completion tokens (from `usage`) over the level's wall time,
  - TTFT p50/p99: time from sending a request to its first content chunk,
  - ITL p50/p99: gaps between consecutive content chunks of a request,
  - failures (requests that raised or ended without a chunk); a request whose connection
    failed before it was sent is retried once (the JSON's "retried" counts those).
With --system-prompt-tokens N it instead sends --requests requests one after another that
share a ~N-token system prompt (text of the GPL-3) and reports the first request's TTFT,
the median TTFT of the others and their ratio: how much a reused prompt prefix saves.
The system prompt starts with a random tag so that a server's cache of an earlier run
does not serve the first request.

Needs `pip install openai`. Usage (2 threads, C parallel sequences, 4096 tokens each):

  target/release/rustorch serve -m MODEL.gguf -t 2 --parallel 16 -c 4096 --port 8080 &
  scripts/bench-server.py http://127.0.0.1:8080 --levels 1,4,8,16 --requests 32

  llama-server -m MODEL.gguf -t 2 -np 16 -c $((4096 * 16)) --port 8081 &
  scripts/bench-server.py http://127.0.0.1:8081 --levels 1,4,8,16 --requests 32

  scripts/bench-server.py http://127.0.0.1:8080 --system-prompt-tokens 1000 --requests 8

(`--parallel C` / `-np C` should be at least the largest level; llama-server splits -c
among its slots, hence 4096*C.) Prints a markdown table; with --json, one JSON object per
line instead (the table then goes to stderr). Exits 1 if any request failed.
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
import urllib.request

PROMPTS = [
    "Explain in a few sentences how a rainbow forms.",
    "Write a short poem about the sea at night.",
    "What are the main causes of inflation in an economy?",
    "Give step-by-step instructions for brewing a good cup of tea.",
]
GPL3 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                    "reference", "texts", "GPL-3")
GPL3_FALLBACK = "/work/shared/reference/texts/GPL-3"


def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def ms(x):
    return None if x is None else round(x * 1000.0, 1)


async def one_request(client, model, messages, max_tokens):
    """Streams one chat completion; returns timings and token counts."""
    import openai

    retried = 0
    while True:
        t0 = time.perf_counter()
        stamps, text, usage = [], [], None
        try:
            stream = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=max_tokens, temperature=0,
                stream=True, stream_options={"include_usage": True})
            break
        except openai.APIConnectionError:
            # A kept-alive connection the server closed meanwhile (llama-server's httplib
            # does): nothing was sent, so try once more on a new one (counted as a retry).
            if retried:
                raise
            retried += 1
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices or []:
            delta = choice.delta
            piece = (getattr(delta, "content", None) or
                     getattr(delta, "reasoning_content", None) or "")
            if piece:
                stamps.append(time.perf_counter())
                text.append(piece)
    if not stamps:
        raise RuntimeError("the stream ended without a content chunk")
    return {
        "ttft": stamps[0] - t0,
        "gaps": [b - a for a, b in zip(stamps, stamps[1:])],
        # A server that ignores include_usage: count chunks (one token each, usually).
        "completion_tokens": usage.completion_tokens if usage else len(stamps),
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "text": "".join(text),
        "retried": retried,
    }


async def run_level(client, model, level, n_requests, max_tokens):
    results, errors = [], []
    next_index = 0

    async def worker():
        nonlocal next_index
        while next_index < n_requests:
            i = next_index
            next_index += 1
            messages = [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
            try:
                results.append(await one_request(client, model, messages, max_tokens))
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                errors.append(f"{type(e).__name__}: {e}")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(level)))
    wall = time.perf_counter() - t0
    tokens = sum(r["completion_tokens"] for r in results)
    ttfts = [r["ttft"] for r in results]
    gaps = [g for r in results for g in r["gaps"]]
    return {
        "mode": "concurrency", "concurrency": level, "requests": n_requests,
        "failures": len(errors), "retried": sum(r["retried"] for r in results),
        "wall_s": round(wall, 3),
        "completion_tokens": tokens,
        "tokens_per_request": round(tokens / len(results), 1) if results else None,
        "gen_tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p99_ms": ms(percentile(ttfts, 99)),
        "itl_p50_ms": ms(percentile(gaps, 50)), "itl_p99_ms": ms(percentile(gaps, 99)),
        "first_error": errors[0] if errors else None,
    }


def server_root(base_url):
    return base_url[:-3] if base_url.endswith("/v1") else base_url


def system_prompt(base_url, n_tokens, api_key):
    """About n_tokens of the GPL-3 text (cut by the server's /tokenize when it has one)."""
    path = GPL3 if os.path.exists(GPL3) else GPL3_FALLBACK
    with open(path, encoding="utf-8") as f:
        text = " ".join(f.read().split())
    tag = f"Session {random.randrange(10**9):09d}. Keep the following text in mind.\n\n"
    try:  # rustorch serve and llama-server both answer POST /tokenize {"content": ...}
        req = urllib.request.Request(
            server_root(base_url) + "/tokenize", data=json.dumps({"content": text}).encode(),
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Bearer {api_key}"} if api_key else {})})
        with urllib.request.urlopen(req, timeout=30) as resp:
            n_text = len(json.load(resp)["tokens"])
        chars = int(len(text) * min(1.0, n_tokens / n_text))
    except Exception:  # noqa: BLE001 - no /tokenize: about 4 characters a token
        chars = n_tokens * 4
    return tag + text[:chars]


async def run_shared_prefix(client, model, base_url, n_tokens, n_requests, max_tokens, api_key):
    system = system_prompt(base_url, n_tokens, api_key)
    results, errors = [], []
    for i in range(n_requests):
        messages = [{"role": "system", "content": system},
                    {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]
        try:
            results.append(await one_request(client, model, messages, max_tokens))
        except Exception as e:  # noqa: BLE001
            errors.append(f"{type(e).__name__}: {e}")
    first = results[0]["ttft"] if results else None
    later = statistics.median(r["ttft"] for r in results[1:]) if len(results) > 1 else None
    return {
        "mode": "shared_system_prompt", "system_prompt_tokens": n_tokens,
        "prompt_tokens": results[0]["prompt_tokens"] if results else None,
        "requests": n_requests, "failures": len(errors),
        "retried": sum(r["retried"] for r in results),
        "first_ttft_ms": ms(first), "later_ttft_p50_ms": ms(later),
        "ratio": round(first / later, 2) if first and later else None,
        "first_error": errors[0] if errors else None,
    }


def fmt(x):
    return "-" if x is None else str(x)


def table(rows):
    if rows and rows[0]["mode"] == "shared_system_prompt":
        cols = ["system_prompt_tokens", "prompt_tokens", "requests", "failures",
                "first_ttft_ms", "later_ttft_p50_ms", "ratio"]
    else:
        cols = ["concurrency", "requests", "failures", "gen_tok_s", "tokens_per_request",
                "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "wall_s"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---:|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c]) for c in cols) + " |" for r in rows]
    errs = [f"{r.get('concurrency', 'shared prefix')}: {r['first_error']}"
            for r in rows if r["first_error"]]
    return "\n".join(lines + [f"first error at {e}" for e in errs])


async def main_async(args):
    from openai import AsyncOpenAI

    base = args.url.rstrip("/")
    client = AsyncOpenAI(base_url=base if base.endswith("/v1") else base + "/v1",
                         api_key=args.api_key or "none", max_retries=0, timeout=args.timeout)
    model = args.model or (await client.models.list()).data[0].id
    print(f"server {base}, model {model}", file=sys.stderr)
    # One untimed request so that the first level does not pay for a cold start.
    await one_request(client, model, [{"role": "user", "content": "Hi"}], 8)

    rows = []
    if args.system_prompt_tokens:
        rows.append(await run_shared_prefix(client, model, base, args.system_prompt_tokens,
                                             args.requests, args.max_tokens, args.api_key))
    else:
        for level in args.levels:
            row = await run_level(client, model, level, args.requests, args.max_tokens)
            row["model"] = model
            rows.append(row)
            print(f"concurrency {level}: {row['gen_tok_s']} tok/s, "
                  f"{row['failures']} failures", file=sys.stderr)
    await client.close()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080 (with or without /v1)")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--model", default=None, help="model name (default: the first of /v1/models)")
    ap.add_argument("--levels", default="1,4,8,16",
                    type=lambda s: [int(x) for x in s.split(",") if x.strip()])
    ap.add_argument("--requests", type=int, default=32, help="requests per level")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--system-prompt-tokens", type=int, default=0,
                    help="shared-system-prompt mode: sequential requests sharing ~N tokens")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per request")
    ap.add_argument("--json", action="store_true", help="JSON lines on stdout, table on stderr")
    args = ap.parse_args()

    rows = asyncio.run(main_async(args))
    if args.json:
        for r in rows:
            print(json.dumps(r), flush=True)
        print(table(rows), file=sys.stderr)
    else:
        print(table(rows))
    sys.exit(1 if any(r["failures"] for r in rows) else 0)


if __name__ == "__main__":
    main()
