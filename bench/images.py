"""Image generation speed: the daemon (OpenAI /v1/images/generations, the sdcpp worker) against
stable-diffusion-cpp-python in-process, same checkpoint, size, steps, sampler, seed and threads,
alternating image by image. Prints seconds per image and per step at each size, the ratio (target >= 0.97 of
in-process), and peak RSS of the worker and of the in-process run.

    python bench/images.py [--sizes 256,512] [--steps 4] [--runs 3] [--threads 2] [--model X.safetensors]

Measured here (2 cores, 4 steps): 256x256 11.6 s/image, 1.01x of in-process; 512x512 51 s, 1.00x;
peak RSS ~1.4 GB both ways.

Without --model it uses the random-weight SDXS-512 checkpoint the tests build (scripts/tiny_sd.py):
the pixels are noise, the work per step is a real SD 1.x-family UNet's.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import load_script, new_daemon  # noqa: E402

def worker_peak_rss_mb() -> float:
    """VmHWM of the sdcpp worker process (the daemon spawns it)."""
    pids = subprocess.run(["pgrep", "-f", "ohmygpu.runtimes.sdcpp.worker"], capture_output=True, text=True).stdout.split()
    peak = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="256,512")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", type=Path)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = args.model or load_script("tiny_sd").cached()
    from stable_diffusion_cpp import StableDiffusion

    sd = StableDiffusion(model_path=str(model), n_threads=args.threads, vae_decode_only=False, verbose=False)
    local: dict[int, list[float]] = {}
    served: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = new_daemon(Path(tmp), extra_env={"OMG_NUM_THREADS": str(args.threads)}).start()
        try:
            assert d.omg("model", "add", str(model), "--name", "sd").returncode == 0

            def daemon_image(size: int, prompt: str, steps: int, seed: int) -> float:
                body = {"model": "sd", "prompt": prompt, "size": f"{size}x{size}", "steps": steps, "seed": seed,
                        "cfg_scale": 7.0, "sampler": "euler_a"}
                t0 = time.perf_counter()
                httpx.post(d.http + "/v1/images/generations", json=body, timeout=600).raise_for_status()
                return time.perf_counter() - t0

            def local_image(size: int, prompt: str, steps: int, seed: int) -> float:
                t0 = time.perf_counter()
                sd.generate_image(prompt=prompt, width=size, height=size, sample_steps=steps, cfg_scale=7.0,
                                  seed=seed, sample_method="euler_a")
                return time.perf_counter() - t0

            for size in sizes:
                local_image(size, "warm up", 1, 1)
                daemon_image(size, "warm up", 1, 1)  # also loads the worker
                for run in range(args.runs):  # alternating, so drift in machine speed hits both
                    pair = [(local, local_image), (served, daemon_image)]
                    for table, fn in pair if run % 2 == 0 else reversed(pair):
                        table.setdefault(size, []).append(fn(size, "a lighthouse at dusk", args.steps, 42))
            rss = worker_peak_rss_mb()
        finally:
            d.stop()
    local_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model {model.name}, {args.steps} steps, euler_a, {args.threads} threads, medians of {args.runs}")
    print(f"{'size':>9} | {'in-process s/image':>18} {'s/step':>7} | {'daemon s/image':>14} {'s/step':>7} | ratio")
    for size in sizes:
        a, b = statistics.median(local[size]), statistics.median(served[size])
        print(f"{size:>4}x{size:<4} | {a:>18.2f} {a / args.steps:>7.2f} | {b:>14.2f} {b / args.steps:>7.2f} | "
              f"{a / b:.2f}x (target >= 0.97)")
    print(f"peak RSS: in-process (this process) {local_rss:.0f} MB, daemon's worker {rss:.0f} MB")


if __name__ == "__main__":
    main()
