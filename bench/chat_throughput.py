"""Chat throughput: llama.cpp in-process vs through the daemon's OpenAI streaming endpoint.

Same model, prompt, seed, thread count and max_tokens on both sides; runs alternate between the
two sides (never at the same time), after one warm-up request each. Prints tokens/s of generation (after the first
token), time to first token, and the ratios. Targets (issue 2): daemon >= 0.95 of in-process
tokens/s and under 15 ms added to the first token.

    python bench/chat_throughput.py [--threads 2] [--max-tokens 128] [--runs 5] [--parallel 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import new_daemon, smollm2_path  # noqa: E402

MESSAGES = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


def in_process_run(llm, max_tokens: int, seed: int) -> tuple[float, float, int]:
    llm.reset()  # the daemon evaluates a seeded prompt from scratch too
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for chunk in llm.create_chat_completion(MESSAGES, temperature=0, seed=seed, max_tokens=max_tokens,
                                            stream=True):
        if chunk["choices"][0]["delta"].get("content"):
            tokens += 1
            last = time.perf_counter()
            if not first:
                first = last
    return first - started, (tokens - 1) / (last - first), tokens


def daemon_run(client: httpx.Client, max_tokens: int, seed: int) -> tuple[float, float, int]:
    body = {"model": "bench", "messages": MESSAGES, "temperature": 0, "seed": seed,
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = last = 0.0
    pieces = usage = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                pieces += 1
                last = time.perf_counter()
                if not first:
                    first = last
    return first - started, (pieces - 1) / (last - first), usage


def measure(path: Path, threads: int, max_tokens: int, seed: int, runs: int, parallel: int = 1):
    """Alternate in-process and daemon runs, so drift in machine load hits both alike; only
    one side generates at a time."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        d = new_daemon(Path(tmp), extra_env={"OMG_NUM_THREADS": str(threads),
                                              "OMG_NUM_PARALLEL": str(parallel)})
        d.start()
        try:
            assert d.omg("model", "add", str(path), "--name", "bench").returncode == 0
            a, b = [], []
            with httpx.Client(base_url=d.http, timeout=300) as client:
                in_process_run(llm, max_tokens, seed)  # warm-up: load, caches
                daemon_run(client, max_tokens, seed)
                for _ in range(runs):
                    time.sleep(0.3)  # let the other side's threads stop spinning and sleep
                    a.append(in_process_run(llm, max_tokens, seed))
                    time.sleep(0.3)
                    b.append(daemon_run(client, max_tokens, seed))
            return a, b
        finally:
            d.stop()
            llm.close()


def summary(label: str, rows: list[tuple[float, float, int]]) -> tuple[float, float]:
    ttft = statistics.median(r[0] for r in rows)
    tps = statistics.median(r[1] for r in rows)
    print(f"{label:<12} tokens/s {tps:7.1f}   first token {ttft * 1000:7.1f} ms   "
          f"tokens/run {statistics.median(r[2] for r in rows):.0f}")
    return ttft, tps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--parallel", type=int, default=1,
                   help="sequences the daemon's model holds (OMG_NUM_PARALLEL); a lone stream should not care")
    args = p.parse_args()
    path = smollm2_path()
    print(f"model {path.name}, threads {args.threads}, max_tokens {args.max_tokens}, runs {args.runs}, "
          f"OMG_NUM_PARALLEL={args.parallel}")
    a, b = measure(path, args.threads, args.max_tokens, args.seed, args.runs, args.parallel)
    ttft_a, tps_a = summary("in-process", a)
    ttft_b, tps_b = summary("daemon", b)
    # Per-pair figures: each daemon run against the in-process run just before it, so slow
    # drift in this shared machine's speed cancels out.
    pair_ratio = statistics.median(y[1] / x[1] for x, y in zip(a, b))
    pair_added = statistics.median(y[0] - x[0] for x, y in zip(a, b))
    print(f"ratio tokens/s daemon/in-process {tps_b / tps_a:.3f} of medians, {pair_ratio:.3f} median of pairs "
          "(target >= 0.95)")
    print(f"added to first token {1000 * (ttft_b - ttft_a):+.1f} ms of medians, {1000 * pair_added:+.1f} ms "
          "median of pairs (target < 15 ms)")


if __name__ == "__main__":
    main()
