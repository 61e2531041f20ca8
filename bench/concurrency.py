"""Concurrency: 1, 2, 4 and 8 streaming clients on one model through the daemon; aggregate
tokens/s, p50/p95 time to first token (which includes queue wait beyond the model's parallel
slots, --parallel = OMG_NUM_PARALLEL), and the model switch latency (evict + load) between two
models under OMG_MAX_LOADED_MODELS=1.

    python bench/concurrency.py [--max-tokens 64] [--parallel 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import new_daemon, smollm2_path  # noqa: E402


def stream_once(base: str, model: str, max_tokens: int, out: list[tuple[float, int, float]]) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "Tell me about the sea."}],
            "max_tokens": max_tokens, "temperature": 0.7, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=600) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            elif not first and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
    out.append((first, tokens, time.perf_counter() - started))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--parallel", type=int, default=1, help="slots per model (OMG_NUM_PARALLEL)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = new_daemon(Path(tmp), extra_env={"OMG_MAX_LOADED_MODELS": "1",
                                             "OMG_NUM_PARALLEL": str(args.parallel)}).start()
        try:
            for name in ("a", "b"):
                assert d.omg("model", "add", str(smollm2_path()), "--name", name).returncode == 0
            stream_once(d.http, "a", 4, [])  # load
            print(f"OMG_NUM_PARALLEL={args.parallel}")
            print(f"{'clients':>7} {'agg tok/s':>10} {'p50 ttft':>9} {'p95 ttft':>9}")
            for n in (1, 2, 4, 8):
                results: list[tuple[float, int, float]] = []
                threads = [threading.Thread(target=stream_once, args=(d.http, "a", args.max_tokens, results))
                           for _ in range(n)]
                started = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - started
                ttfts = [r[0] for r in results]
                print(f"{n:>7} {sum(r[1] for r in results) / wall:>10.1f} {1000 * statistics.median(ttfts):>7.0f}ms"
                      f" {1000 * pct(ttfts, 0.95):>7.0f}ms")
            switches = []
            for model in ("b", "a", "b", "a"):
                t0 = time.perf_counter()
                stream_once(d.http, model, 1, [])
                switches.append(time.perf_counter() - t0)
            print(f"model switch (evict + load + 1 token): median {1000 * statistics.median(switches):.0f} ms")
        finally:
            d.stop()


if __name__ == "__main__":
    main()
