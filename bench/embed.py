"""Embedding throughput: llama.cpp in-process vs through the daemon's /v1/embeddings, batch 1 and 32.

Same model (SmolLM2-135M, mean pooling, normalised), texts, threads and context on both sides;
runs alternate after a warm-up. Prints embeddings/s of each side and the ratio per batch size.

    python bench/embed.py [--threads 2] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import new_daemon, smollm2_path  # noqa: E402

SENTENCES = [f"Sentence number {i} talks about {topic} in a few plain words."
             for i, topic in enumerate(["cats", "markets", "rain", "music", "bread", "trains", "code", "tea"] * 4)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--context", type=int, default=2048)
    args = ap.parse_args()
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(smollm2_path()), embedding=True,
                          pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, n_ctx=args.context,
                          n_batch=args.context, n_ubatch=args.context, n_threads=args.threads,
                          n_threads_batch=args.threads, verbose=False)
    tmp = Path(tempfile.mkdtemp(prefix="omg-bench-"))
    d = new_daemon(tmp, extra_env={"OMG_NUM_THREADS": str(args.threads),
                                   "OMG_CONTEXT_LENGTH": str(args.context)}).start()
    try:
        assert d.omg("model", "add", str(smollm2_path()), "--name", "bench").returncode == 0
        client = httpx.Client(base_url=d.http, timeout=600)

        def in_process(texts: list[str]) -> float:
            started = time.perf_counter()
            vectors = llm.embed(texts, normalize=True)
            assert len(vectors) == len(texts)
            return time.perf_counter() - started

        def daemon(texts: list[str]) -> float:
            started = time.perf_counter()
            r = client.post("/v1/embeddings", json={"model": "bench", "input": texts, "encoding_format": "base64"})
            r.raise_for_status()
            assert len(r.json()["data"]) == len(texts)
            return time.perf_counter() - started

        daemon(SENTENCES[:1])  # warm-up: loads the embeddings worker
        in_process(SENTENCES[:1])
        for batch in (1, 32):
            texts = SENTENCES[:batch]
            ours, theirs = [], []
            for _ in range(args.runs):
                # A pause between sides: the worker's OpenMP threads spin a while after a request
                # (GOMP_SPINCOUNT) and would steal the cores from an in-process run right after.
                time.sleep(0.2)
                theirs.append(batch / in_process(texts))
                time.sleep(0.2)
                ours.append(batch / daemon(texts))
            ip, dm = statistics.median(theirs), statistics.median(ours)
            print(f"batch {batch:2d}: in-process {ip:7.1f} emb/s   daemon {dm:7.1f} emb/s   ratio {dm / ip:.3f}")
    finally:
        d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
