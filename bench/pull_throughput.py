"""Pull throughput: `omg` (through the daemon) vs huggingface_hub.snapshot_download, from the
same local fake hub (its own process), same files, cold caches.

Prints wall time, MB/s and CPU seconds per GB for each, and the ratios. Targets (issue 3): at
least as fast, and CPU per GB no worse than 1.2x (we hash while writing, in one pass).

With --resume: the bytes a pull moves in all when the daemon is killed (-9) partway at
--rate bytes/s and restarted, over the file's size, for kills at 25/50/75%. Target (issue
10): at most 1.1x at 15 MB/s.

    python bench/pull_throughput.py [--extra-mb 300]
    python bench/pull_throughput.py --resume [--rate 15000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import new_daemon, smollm2_path  # noqa: E402

REPO = "bench-org/bench-GGUF"
HF_CODE = """
import json, sys, time
import huggingface_hub as h
t, c = time.perf_counter(), time.process_time()
h.snapshot_download(sys.argv[1], cache_dir=sys.argv[2])
print(json.dumps({"wall": time.perf_counter() - t, "cpu": time.process_time() - c}))
"""


def ours(endpoint: str, tmp: Path) -> tuple[float, float]:
    d = new_daemon(tmp / "omg", extra_env={"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(tmp / "omg-hf")})
    d.start()
    try:
        proc = psutil.Process(d.proc.pid)
        cpu0 = sum(proc.cpu_times()[:2])
        started = time.perf_counter()
        job = httpx.post(f"{d.http}/v1/models/install", json={"source": REPO}).json()
        while True:
            state = httpx.get(f"{d.http}/v1/jobs/{job['id']}").json()
            if state["state"] != "JOB_STATE_RUNNING" and state["state"] != "JOB_STATE_QUEUED":
                break
            time.sleep(0.02)
        wall = time.perf_counter() - started
        assert state["state"] == "JOB_STATE_DONE", state
        return wall, sum(proc.cpu_times()[:2]) - cpu0
    finally:
        d.stop()


def hf(endpoint: str, tmp: Path) -> tuple[float, float]:
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    out = subprocess.run([sys.executable, "-c", HF_CODE, REPO, str(tmp / "hf-hf")], env=env, capture_output=True,
                         text=True, check=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["wall"], r["cpu"]


def resume_ratio(rate: int, fraction: float, tmp: Path) -> float:
    """Bytes served for one pull of SmolLM2 (98 MB, 4 ranges) killed with SIGKILL once the hub has
    sent `fraction` of it (whenever that falls between progress saves), then resumed by a new
    daemon, over the file's size."""
    import signal

    from tests.fakes.hub import FakeHub, FakeRepo

    data = smollm2_path().read_bytes()
    repo = FakeRepo(REPO, {"model.Q4_1.gguf": data})
    _ = repo.file("model.Q4_1.gguf").sha256
    with FakeHub([repo]) as hub:
        hub.faults.bytes_per_second = rate // 4  # per connection: 4 ranges share `rate`
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp / "hf")}
        d = new_daemon(tmp, extra_env=env).start()
        job = httpx.post(f"{d.http}/v1/models/install", json={"source": REPO}).json()
        while hub.bytes_served < fraction * len(data):
            time.sleep(0.005)
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        sent = hub.bytes_served  # what crossed (or was on its way) before the kill
        hub.faults.bytes_per_second = None
        asked_from = len(hub.seen)
        d2 = type(d)(home=d.home, http_port=d.http_port, grpc_port=d.grpc_port, extra_env=d.extra_env).start()
        try:
            while httpx.get(f"{d2.http}/v1/jobs/{job['id']}").json()["state"] in ("JOB_STATE_RUNNING",
                                                                                  "JOB_STATE_QUEUED"):
                time.sleep(0.05)
        finally:
            d2.stop()
        # After the restart, what the new daemon asked for (the ranges it resumed): the hub's own
        # counter would also count what its streams of the killed connections still produce.
        for seen in hub.seen[asked_from:]:
            if seen.path.startswith("/blobs/"):
                first, _, last = (seen.range or f"bytes=0-{len(data) - 1}")[6:].partition("-")
                sent += int(last or len(data) - 1) - int(first) + 1
        return sent / len(data)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--extra-mb", type=int, default=300, help="size of an extra random file, MB")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--resume", action="store_true", help="measure the bytes moved by a resume after kill -9")
    p.add_argument("--rate", type=int, default=15_000_000, help="with --resume: the hub's rate, bytes/s")
    args = p.parse_args()
    if args.resume:
        ratios = []
        for fraction in (0.25, 0.5, 0.75):
            with tempfile.TemporaryDirectory() as tmp:
                ratios.append(resume_ratio(args.rate, fraction, Path(tmp)))
            print(f"killed at {fraction:.0%}: {ratios[-1]:.3f}x the file's bytes moved in all")
        print(f"resume after kill -9 at {args.rate / 1e6:.0f} MB/s: worst {max(ratios):.3f}x (target <= 1.1)")
        return
    hub = subprocess.Popen([sys.executable, "-m", "tests.fakes.hub", REPO, str(smollm2_path()),
                            "--random", f"weights-extra.bin:{args.extra_mb * 1_000_000}"],
                           cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        endpoint = hub.stdout.readline().strip()
        total = smollm2_path().stat().st_size + args.extra_mb * 1_000_000
        print(f"{total / 1e6:.0f} MB in 2 files from {endpoint}, {args.runs} runs each, cold caches")
        results: dict[str, list[tuple[float, float]]] = {"omg": [], "huggingface_hub": []}
        for _ in range(args.runs):
            for label, fn in (("huggingface_hub", hf), ("omg", ours)):
                with tempfile.TemporaryDirectory() as tmp:
                    results[label].append(fn(endpoint, Path(tmp)))
        best = {k: min(v) for k, v in results.items()}
        for label, (wall, cpu) in best.items():
            print(f"{label:<16} wall {wall:6.2f} s  {total / 1e6 / wall:7.1f} MB/s  cpu {cpu / (total / 1e9):5.2f} s/GB")
        print(f"wall ratio omg/huggingface_hub {best['omg'][0] / best['huggingface_hub'][0]:.2f} (target <= 1.0)")
        print(f"cpu/GB ratio omg/huggingface_hub {best['omg'][1] / best['huggingface_hub'][1]:.2f} (target <= 1.2)")
    finally:
        hub.terminate()


if __name__ == "__main__":
    main()
