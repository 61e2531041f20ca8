"""Image generation end to end: a real daemon, the real stable-diffusion.cpp worker and a
random-weight SDXS-512 checkpoint (scripts/tiny_sd.py), through the official `openai` client,
the Automatic1111 dialect, native gRPC progress and `omg gen image`; an image model and an LLM
budgeted in the same RAM."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from ohmygpu.api.v1 import images_pb2_grpc
from ohmygpu.runtime.v1 import runtime_pb2
from PIL import Image

from tests.helpers import DaemonProc, new_daemon

pytestmark = pytest.mark.slow

# One generation thread: ggml's spinning threads slow ~10x when they share 2 cores with others.
ENV = {"OMG_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, sd_model_path: Path, gguf_path: Path) -> Iterator[DaemonProc]:
    d = new_daemon(tmp_path_factory.mktemp("images"), extra_env=ENV).start()
    assert d.omg("model", "add", str(sd_model_path), "--name", "tiny-sd").returncode == 0
    assert d.omg("model", "add", str(gguf_path), "--name", "llm").returncode == 0
    yield d
    d.stop()


def _png(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return image


def test_openai_client_generates_and_edits(daemon: DaemonProc) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=daemon.http + "/v1", api_key="unused")
    first = client.images.generate(model="tiny-sd", prompt="a red boat", size="64x64", n=2,
                                   response_format="b64_json", extra_body={"seed": 3, "steps": 2})
    a, b = (_png(d.b64_json) for d in first.data)
    assert a.size == b.size == (64, 64) and a.tobytes() != b.tobytes()  # n=2: seeds 3 and 4
    assert "Seed: 3" in a.info["parameters"] and "Steps: 2" in a.info["parameters"]
    again = client.images.generate(model="tiny-sd", prompt="a red boat", size="64x64",
                                   response_format="b64_json", extra_body={"seed": 3, "steps": 2})
    assert _png(again.data[0].b64_json).tobytes() == a.tobytes()  # same seed, same pixels
    # OpenAI's default model name means the installed image model; url gives a data: URL.
    aliased = client.images.generate(model="dall-e-2", prompt="a red boat", size="64x64", response_format="url",
                                     extra_body={"seed": 3, "steps": 2})
    assert aliased.data[0].url.startswith("data:image/png;base64,")
    buf = io.BytesIO()
    a.save(buf, format="PNG")
    edited = client.images.edit(model="tiny-sd", image=("in.png", buf.getvalue(), "image/png"), prompt="a boat",
                                size="64x64", response_format="b64_json", extra_body={"seed": 1, "steps": 4, "strength": 0.5})
    assert _png(edited.data[0].b64_json).size == (64, 64)


def test_native_grpc_streams_progress_per_step_then_images(daemon: DaemonProc) -> None:
    with grpc.insecure_channel(daemon.grpc_addr) as channel:
        stub = images_pb2_grpc.ImageServiceStub(channel)
        messages = list(stub.GenerateImage(runtime_pb2.GenerateImageRequest(
            model="tiny-sd", prompt="a tree", width=64, height=64, steps=3, seed=9), timeout=300))
    steps = [m.progress.step for m in messages if m.HasField("progress")]
    assert steps == [1, 2, 3], steps
    assert messages[-1].HasField("image") and messages[-1].image.seed == 9
    # The event stream told it too: started, each step, done.
    states: list[tuple[str, str]] = []
    with httpx.stream("GET", daemon.http + "/v1/events", timeout=10) as r:
        for line in r.iter_lines():
            event = json.loads(line)["result"]
            if event["kind"] == "EVENT_KIND_GENERATION":
                states.append((event["attributes"]["state"], int(event.get("progress", {}).get("completed", 0))))
                if states[-1][0] == "done" and ("progress", 3) in states:
                    break
    assert states[0] == ("started", 0) and ("progress", 1) in states and states[-1][0] == "done", states


def test_automatic1111_txt2img_and_progress(daemon: DaemonProc) -> None:
    base = daemon.http + "/sdapi/v1"
    seen: list[dict] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            seen.append(httpx.get(base + "/progress", timeout=10).json())
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        r = httpx.post(base + "/txt2img", timeout=300, json={
            "prompt": "a house", "negative_prompt": "blur", "steps": 8, "width": 64, "height": 64,
            "seed": 5, "sampler_name": "Euler a", "override_settings": {"sd_model_checkpoint": "tiny-sd"}})
    finally:
        done.set()
        poller.join()
    assert r.status_code == 200, r.text
    body = r.json()
    image = _png(body["images"][0])
    info = json.loads(body["info"])
    assert image.size == (64, 64) and info["seed"] == 5 and "Negative prompt: blur" in info["infotexts"][0]
    assert any(0 < p["progress"] < 1 and p["state"]["sampling_steps"] == 8 for p in seen), seen[-3:]


def test_inpainting_through_openai_edits_and_automatic1111(daemon: DaemonProc) -> None:
    import numpy as np
    from openai import OpenAI

    y, x = np.mgrid[0:64, 0:64]
    source = np.stack([x * 4, y * 4, np.full_like(x, 128)], -1).astype(np.uint8)

    def png(array: np.ndarray, mode: str) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(array, mode=mode).save(buf, format="PNG")
        return buf.getvalue()

    def halves(image: Image.Image) -> tuple[float, float]:
        diff = np.abs(np.asarray(image.convert("RGB")).astype(np.int16) - source)
        return float(diff[:, :32].mean()), float(diff[:, 32:].mean())

    # OpenAI: the mask's fully transparent pixels (the left half) are edited.
    alpha = np.full((64, 64), 255, np.uint8)
    alpha[:, :32] = 0
    mask = png(np.dstack([source, alpha]), "RGBA")
    client = OpenAI(base_url=daemon.http + "/v1", api_key="unused")
    edited = client.images.edit(model="tiny-sd", image=("in.png", png(source, "RGB"), "image/png"),
                                mask=("mask.png", mask, "image/png"), prompt="a boat", size="64x64",
                                response_format="b64_json", extra_body={"seed": 1, "steps": 2, "strength": 1.0})
    left, right = halves(_png(edited.data[0].b64_json))
    assert right < 0.7 * left, (left, right)
    # Automatic1111: white repaints unless inpainting_mask_invert; the same area either way.
    white = np.zeros((64, 64), np.uint8)
    white[:, :32] = 255
    answers = []
    for m, invert in ((white, 0), (255 - white, 1)):
        r = httpx.post(daemon.http + "/sdapi/v1/img2img", timeout=300, json={
            "prompt": "a boat", "steps": 2, "width": 64, "height": 64, "seed": 1, "denoising_strength": 1.0,
            "init_images": [base64.b64encode(png(source, "RGB")).decode()],
            "mask": base64.b64encode(png(m, "L")).decode(), "inpainting_mask_invert": invert,
            "override_settings": {"sd_model_checkpoint": "tiny-sd"}})
        assert r.status_code == 200, r.text
        image = _png(r.json()["images"][0])
        assert "Mask blur: 4" in image.info["parameters"]  # A1111's default blur
        answers.append(image.tobytes())
    assert answers[0] == answers[1]
    left, right = halves(Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0]))))
    assert right < 0.7 * left, (left, right)


def test_omg_gen_image_writes_pngs(daemon: DaemonProc, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    r = daemon.omg("gen", "image", "a lighthouse", "-m", "tiny-sd", "-o", str(out), "--size", "64x64",
                   "--steps", "2", "--seed", "7", "-n", "2", timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(out), str(tmp_path / "out-1.png")]
    assert Image.open(out).size == (64, 64) and "Seed: 7" in Image.open(out).info["parameters"]
    assert "Seed: 8" in Image.open(tmp_path / "out-1.png").info["parameters"]


def test_omg_gen_image_inpaints_with_a_mask(daemon: DaemonProc, tmp_path: Path) -> None:
    Image.new("RGB", (64, 64), (30, 120, 200)).save(tmp_path / "in.png")
    Image.new("L", (64, 64), 255).save(tmp_path / "mask.png")
    out = tmp_path / "out.png"
    r = daemon.omg("gen", "image", "a boat", "-m", "tiny-sd", "-o", str(out), "--steps", "1", "--seed", "3",
                   "--init", str(tmp_path / "in.png"), "--mask", str(tmp_path / "mask.png"), "--mask-blur", "1",
                   "-q", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Mask blur: 1" in Image.open(out).info["parameters"]
    r = daemon.omg("gen", "image", "a boat", "-m", "tiny-sd", "--mask", str(tmp_path / "mask.png"))
    assert r.returncode != 0 and "--mask (inpainting) needs --init" in r.stderr


def test_top_shows_an_image_generation_step_by_step(daemon: DaemonProc) -> None:
    from tests.helpers import PtySession

    top = PtySession(["top", "--interval", "0.5"], daemon.env)
    try:
        top.expect("loaded models")
        made: list[runtime_pb2.GenerateImageResponse] = []

        def generate() -> None:
            with grpc.insecure_channel(daemon.grpc_addr) as channel:
                made.extend(images_pb2_grpc.ImageServiceStub(channel).GenerateImage(runtime_pb2.GenerateImageRequest(
                    model="tiny-sd", prompt="a tree", width=64, height=64, steps=12, count=2, seed=1), timeout=300))

        worker = threading.Thread(target=generate)
        worker.start()
        top.expect("image generations", timeout=60)  # the row comes with the start event
        deadline = time.monotonic() + 120
        while not re.search(r"tiny-sd\W+[12]/2\W+.*\b\d+/12\b", top.screen) and time.monotonic() < deadline:
            top.read_for(0.5)  # then its steps, as the worker reports them
        worker.join()
        assert re.search(r"tiny-sd\W+[12]/2\W+.*\b\d+/12\b", top.screen), top.screen[-3000:]
        assert sum(m.HasField("image") for m in made) == 2
    finally:
        if top.proc.poll() is None:
            top.proc.kill()


def test_repl_generates_an_image(daemon: DaemonProc, tmp_path: Path) -> None:
    from tests.helpers import PtySession

    out = tmp_path / "repl.png"
    repl = PtySession([], daemon.env)
    try:
        repl.expect("omg>")
        repl.send(f"image 'a small house' -m tiny-sd -o {out} --size 64x64 --steps 2 --seed 4\r")
        repl.expect(str(out), timeout=120)  # printed once written, after a bar per step
        repl.expect("omg>")
        repl.send("exit\r")
        assert repl.close() == 0
    finally:
        if repl.proc.poll() is None:
            repl.proc.kill()
    assert "Seed: 4" in Image.open(out).info["parameters"]


def _estimate(d: DaemonProc, name: str) -> int:
    r = httpx.get(f"{d.http}/v1/store:estimate", params={"name": name}, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()["totalBytes"])


def test_image_model_and_llm_share_the_ram_budget(tmp_path: Path, sd_model_path: Path, gguf_path: Path) -> None:
    home = tmp_path / "budget"
    d = new_daemon(home, extra_env=ENV).start()
    try:
        assert d.omg("model", "add", str(sd_model_path), "--name", "tiny-sd").returncode == 0
        assert d.omg("model", "add", str(gguf_path), "--name", "llm").returncode == 0
        image_mb, llm_mb = (_estimate(d, n) >> 20 for n in ("tiny-sd", "llm"))
    finally:
        d.stop()

    def loaded(d: DaemonProc) -> set[str]:
        return {m["name"] for m in json.loads(d.omg("ps", "--json").stdout)["models"]}

    def use_both(d: DaemonProc) -> None:
        r = httpx.post(d.http + "/v1/images/generations", timeout=300, json={
            "model": "tiny-sd", "prompt": "x", "size": "64x64", "steps": 1, "seed": 1})
        assert r.status_code == 200, r.text
        r = httpx.post(d.http + "/api/generate", timeout=120, json={
            "model": "llm", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
        assert r.status_code == 200, r.text

    # Room for both: both stay loaded.
    d = new_daemon(home, extra_env={**ENV, "OMG_RAM_BUDGET_MB": str(image_mb + llm_mb + 64)}).start()
    try:
        use_both(d)
        assert loaded(d) == {"tiny-sd", "llm"}
    finally:
        d.stop()
    # Room for the image model's estimate but not beside the LLM: loading it evicts the idle LLM
    # (placement counts loaded workers by what they measure, a load by its estimate).
    d = new_daemon(home, extra_env={**ENV, "OMG_RAM_BUDGET_MB": str(image_mb + 32)}).start()
    try:
        r = httpx.post(d.http + "/api/generate", timeout=120, json={
            "model": "llm", "prompt": "hi", "stream": False, "options": {"num_predict": 2}})
        assert r.status_code == 200 and loaded(d) == {"llm"}, r.text
        r = httpx.post(d.http + "/v1/images/generations", timeout=300, json={
            "model": "tiny-sd", "prompt": "x", "size": "64x64", "steps": 1})
        assert r.status_code == 200, r.text
        assert loaded(d) == {"tiny-sd"}
    finally:
        d.stop()


def test_mcp_generate_image_returns_a_png(daemon: DaemonProc) -> None:
    import anyio

    from tests.e2e.test_mcp import _session

    tools, (result, bad) = anyio.run(_session, daemon.env, [
        ("generate_image", {"prompt": "a cat", "model": "tiny-sd", "size": "64x64", "steps": 1, "seed": 2}),
        ("generate_image", {"prompt": "a cat", "model": "llm", "size": "64x64"})])
    assert "generate_image" in {t.name for t in tools.tools}
    image = next(c for c in result.content if c.type == "image")
    assert image.mime_type == "image/png" and Image.open(io.BytesIO(base64.b64decode(image.data))).size == (64, 64)
    assert bad.is_error and "cannot generate images" in "".join(getattr(c, "text", "") for c in bad.content)


def test_a_gguf_diffusion_model_generates_and_a_denoiser_alone_is_refused(
        daemon: DaemonProc, sd_gguf_path: Path, tmp_path: Path) -> None:
    from tests.unit.test_diffusion_files import FLUX, write_gguf

    assert daemon.omg("model", "add", str(sd_gguf_path), "--name", "tiny-sd-gguf").returncode == 0
    info = daemon.omg("model", "info", "tiny-sd-gguf")
    for line in ("kind          image", "format        gguf", "family        sd1", "(F16, Q4_0)",
                 "holds         denoiser, VAE, text encoder"):
        assert line in info.stdout, info.stdout

    def generate(model: str, seed: int) -> httpx.Response:
        return httpx.post(daemon.http + "/v1/images/generations", timeout=300, json={
            "model": model, "prompt": "a lighthouse", "size": "64x64", "steps": 2, "seed": seed,
            "response_format": "b64_json"})

    first, again = generate("tiny-sd-gguf", 5), generate("tiny-sd-gguf", 5)
    assert first.status_code == 200, first.text
    a, b = _png(first.json()["data"][0]["b64_json"]), _png(again.json()["data"][0]["b64_json"])
    assert a.size == (64, 64) and a.tobytes() == b.tobytes()
    assert "Model: tiny-sd-gguf" in a.info["parameters"]

    # A FLUX denoiser without its VAE and text encoders: a 400 saying what it lacks, no load tried.
    flux = write_gguf(tmp_path / "flux1-schnell-Q8_0.gguf", "flux", FLUX)
    assert daemon.omg("model", "add", str(flux), "--name", "flux-alone").returncode == 0
    refused = generate("flux-alone", 1)
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert "lacks its VAE and text encoder" in error["message"] and error["param"] == "model"
    assert "lacks VAE, text encoder" in daemon.omg("model", "info", "flux-alone").stdout


def test_a_model_in_separate_files_generates_what_its_single_file_does(
        daemon: DaemonProc, sd_parts_path: Path) -> None:
    """The tiny checkpoint split into a UNet, its autoencoder and its CLIP-L, the way FLUX, SD3 and
    Wan are published: one model, each file under its role, the same pixels as the single file."""
    unet, vae, clip = (str(sd_parts_path / n) for n in ("sdxs-unet.safetensors", "sdxs-taesd.safetensors",
                                                          "clip_l.safetensors"))
    added = daemon.omg("model", "add", unet, "--part", vae, "--part", clip, "--name", "tiny-sd-parts")
    assert added.returncode == 0, added.stderr
    info = daemon.omg("model", "info", "tiny-sd-parts").stdout
    for line in ("kind          image", "family        sd1", "holds         denoiser, VAE, text encoder",
                 "sdxs-unet.safetensors (diffusion_model)", "sdxs-taesd.safetensors (vae)",
                 "clip_l.safetensors (clip_l)"):
        assert line in info, info

    def pixels(model: str) -> bytes:
        r = httpx.post(daemon.http + "/v1/images/generations", timeout=300, json={
            "model": model, "prompt": "a lighthouse", "size": "64x64", "steps": 2, "seed": 5,
            "response_format": "b64_json"})
        assert r.status_code == 200, r.text
        image = _png(r.json()["data"][0]["b64_json"])
        assert image.size == (64, 64)
        return image.tobytes()

    assert pixels("tiny-sd-parts") == pixels("tiny-sd")

    # A set that does not add up is refused naming the file, over HTTP too; nothing registers.
    r = httpx.post(daemon.http + "/v1/store/models", timeout=60,
                   json={"path": clip, "name": "backwards", "parts": [unet, vae]})
    assert r.status_code == 400, r.text
    assert "must be its diffusion model" in r.text, r.text
    assert "backwards" not in daemon.omg("model", "list").stdout
