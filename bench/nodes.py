"""A model on a remote node (through the daemon) against the same model on the daemon's own
machine: generated tokens/s and time to first token, over loopback and over links with added
latency, alternating local and remote request by request.

    python bench/nodes.py [--trials 5] [--max-tokens 128] [--latency-ms 0,5,50]

One daemon, one node agent with its own OMG_HOME on this machine; the same GGUF registered twice
("m-local" pinned to the daemon's machine, "m-remote" pinned to the node), both loaded, so the
only difference is the path: daemon -> agent relay -> worker. The link's added latency is the
round trip added to the daemon <-> agent traffic (half each way). It is made by
tests/fakes/slowlink.py, a userspace proxy that delays each chunk on a timeline: `tc netem`
needs the sch_netem kernel module, which these machines' kernels lack (the script says which it
used). Targets: remote tokens/s >= 0.97 of local at 5 ms; TTFT growing by about one round trip.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.slowlink import SlowLink  # noqa: E402
from tests.helpers import free_port, new_daemon, smollm2_path  # noqa: E402
from tests.node_hosts import Host, NodeProc  # noqa: E402

TOKEN = "bench-join-token"
PROMPT = "Write a long story about a lighthouse keeper and the sea."


def one(http: str, model: str, max_tokens: int) -> tuple[float, float, int]:
    """(time to first token s, tokens/s after the first, tokens) of one streamed chat."""
    body = {"model": model, "stream": True, "max_tokens": max_tokens, "temperature": 0.0, "seed": 1,
            "messages": [{"role": "user", "content": PROMPT}]}
    start = time.perf_counter()
    first = last = 0.0
    tokens = 0
    with httpx.stream("POST", http + "/v1/chat/completions", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                tokens += 1
    rate = (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0
    return first - start, rate, tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--latency-ms", default="0,5,50", help="round trips added to the node link, comma-separated")
    ap.add_argument("--model", default="", help="a GGUF (default: SmolLM2-135M Q4_1)")
    args = ap.parse_args()
    gguf = Path(args.model) if args.model else smollm2_path()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"omg-bench-nodes-{os.getpid()}"
    node_port = free_port()
    d = new_daemon(tmp, extra_env={"OMG_NODE_TOKEN": TOKEN, "OMG_NODE_ADDR": f"127.0.0.1:{node_port}",
                                   "OMG_KEEP_ALIVE": "-1"})
    d.start()
    fingerprint = ""
    deadline = time.monotonic() + 20
    while not fingerprint and time.monotonic() < deadline:  # the daemon prints it as it starts
        for line in (d.home / "serve.log").read_text().splitlines():
            if "--fingerprint " in line:
                fingerprint = line.rsplit("--fingerprint ", 1)[1].strip()
        time.sleep(0.1)
    agent_port = free_port()
    with SlowLink(agent_port, latency_s=0.0) as link:
        node = NodeProc(Host(0, addr="127.0.0.1"), "far", tmp / "node", node_port, TOKEN, fingerprint,
                        port=agent_port, advertise=f"127.0.0.1:{link.port}")
        # The agent advertises the proxy: every daemon -> agent call (the token streams) crosses it.
        node.start()
        try:
            for name, where in (("m-local", "local"), ("m-remote", "far")):
                assert d.omg("model", "add", str(gguf), "--name", name).returncode == 0
                out = d.omg("run", name, "--node", where, timeout=300)
                assert out.returncode == 0, out.stderr
            for name in ("m-local", "m-remote"):  # warm both (the node got the files on its run)
                one(d.http, name, 8)
            print(f"model {gguf.name}, {args.max_tokens} tokens per request, {args.trials} trials, medians; "
                  "link: userspace delay proxy (tests/fakes/slowlink.py; no sch_netem in this kernel)")
            print(f"{'added RTT':>9} | {'local tok/s':>11} {'remote tok/s':>12} {'ratio':>6} | "
                  f"{'local TTFT':>10} {'remote TTFT':>11} {'delta':>8}")
            for ms in (float(x) for x in args.latency_ms.split(",")):
                link.latency_s = ms / 2000  # half the round trip each way
                local, remote = [], []
                for _ in range(args.trials):  # alternating, so drift hits both alike
                    local.append(one(d.http, "m-local", args.max_tokens))
                    remote.append(one(d.http, "m-remote", args.max_tokens))
                lt, lr = statistics.median(t for t, _, _ in local), statistics.median(r for _, r, _ in local)
                rt, rr = statistics.median(t for t, _, _ in remote), statistics.median(r for _, r, _ in remote)
                print(f"{ms:>6.0f} ms | {lr:>11.1f} {rr:>12.1f} {rr / lr:>5.3f}x | "
                      f"{lt * 1000:>8.1f}ms {rt * 1000:>9.1f}ms {(rt - lt) * 1000:>+6.1f}ms", flush=True)
        finally:
            node.stop()
            d.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
