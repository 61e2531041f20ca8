"""The images API's refusals, through a real daemon: bad input is a 400 in the dialect's own
format before any queue or load, and a model of another kind is named as such. (Generation
itself, on a real stable-diffusion.cpp worker: tests/e2e/test_images.py.)"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from ohmygpu.api.v1 import images_pb2_grpc
from ohmygpu.runtime.v1 import runtime_pb2

from tests.helpers import DaemonProc, new_daemon
from tests.unit.test_diffusion_files import SD1, write_safetensors

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory, gguf_path: Path) -> Iterator[DaemonProc]:
    tmp = tmp_path_factory.mktemp("images-api")
    d = new_daemon(tmp).start()
    ckpt = write_safetensors(tmp / "fake-sd.safetensors", SD1, shape=(4, 8))
    assert d.omg("model", "add", str(ckpt), "--name", "fake-sd").returncode == 0
    assert d.omg("model", "add", str(gguf_path), "--name", "llm").returncode == 0
    yield d
    d.stop()


def _gen(d: DaemonProc, **body) -> httpx.Response:
    return httpx.post(d.http + "/v1/images/generations", json={"model": "fake-sd", "prompt": "a cat", **body},
                      timeout=30)


@pytest.mark.parametrize("body, param, text", [
    ({"size": "65x64"}, "size", "multiple of 8"),
    ({"size": "4096x4096"}, "size", "OMG_IMAGE_MAX_SIZE"),
    ({"size": "big"}, "size", "WIDTHxHEIGHT"),
    ({"steps": 0}, "steps", "from 1 to 150"),
    ({"steps": 10000}, "steps", "from 1 to 150"),
    ({"n": 50}, "n", "from 1 to 10"),
    ({"prompt": ""}, "prompt", "required"),
    ({"response_format": "gif"}, "response_format", "b64_json or url"),
    ({"cfg_scale": 99}, "cfg_scale", "0 to 30"),
    ({"model": "llm"}, "model", "cannot generate images"),
])
def test_bad_generation_requests_are_openai_400s(daemon: DaemonProc, body: dict, param: str, text: str) -> None:
    r = _gen(daemon, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and text in error["message"], error


def test_unknown_model_is_a_404(daemon: DaemonProc) -> None:
    r = _gen(daemon, model="nope")
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]


def test_edits_refuse_what_is_not_an_image(daemon: DaemonProc) -> None:
    r = httpx.post(daemon.http + "/v1/images/edits", data={"model": "fake-sd", "prompt": "a cat"},
                   files={"image": ("cat.png", io.BytesIO(b"this is not a picture"), "image/png")}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
    r = httpx.post(daemon.http + "/v1/images/edits", data={"model": "fake-sd", "prompt": "a cat"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "image", r.text
    png, jpeg = b"\x89PNG\r\n\x1a\n" + b"\0" * 32, b"\xff\xd8\xff" + b"\0" * 32
    r = httpx.post(daemon.http + "/v1/images/edits", data={"model": "fake-sd", "prompt": "a cat"},
                   files={"image": ("cat.png", io.BytesIO(png), "image/png"), "mask": ("m.jpg", io.BytesIO(jpeg))},
                   timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "mask", r.text  # OpenAI's masks are PNGs


def test_native_grpc_refuses_with_invalid_argument(daemon: DaemonProc) -> None:
    with grpc.insecure_channel(daemon.grpc_addr) as channel:
        stub = images_pb2_grpc.ImageServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.GenerateImage(runtime_pb2.GenerateImageRequest(model="fake-sd", prompt="x", width=65), timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "multiple of 8" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            list(stub.GenerateImage(runtime_pb2.GenerateImageRequest(model="llm", prompt="x"), timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "cannot generate images" in e.value.details()
    # The management route from the proto's http rule answers in grpc-gateway's shape.
    r = httpx.post(daemon.http + "/v1/omg/images", json={"model": "fake-sd", "prompt": "x", "steps": 9999}, timeout=30)
    assert r.status_code == 400 and "OMG_IMAGE_MAX_STEPS" in r.json()["message"], r.text


def test_model_info_shows_what_the_checkpoint_holds(daemon: DaemonProc) -> None:
    out = daemon.omg("model", "info", "fake-sd").stdout
    assert "family        sd1 (native 512x512)" in out and "denoiser, VAE, text encoder" in out, out
    assert "image" in daemon.omg("model", "ls").stdout


def test_automatic1111_dialect_lists_models_and_refuses_in_its_format(daemon: DaemonProc) -> None:
    base = daemon.http + "/sdapi/v1"
    models = httpx.get(base + "/sd-models").json()
    assert [m["model_name"] for m in models] == ["fake-sd"] and len(models[0]["sha256"]) == 64
    assert httpx.get(base + "/options").json()["sd_model_checkpoint"] == "fake-sd"
    r = httpx.post(base + "/options", json={"sd_model_checkpoint": "nope"})
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert httpx.post(base + "/options", json={"sd_model_checkpoint": "fake-sd"}).status_code == 200
    assert "Euler a" in [s["name"] for s in httpx.get(base + "/samplers").json()]
    idle = httpx.get(base + "/progress").json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0
    for body, text in (({"prompt": "x", "width": 65}, "multiple of 8"),
                       ({"prompt": "x", "sampler_name": "Nope"}, "unknown sampler"),
                       ({"prompt": ""}, "required"),
                       ({"prompt": "x", "steps": 500}, "from 1 to 150"),
                       ({"prompt": "x", "override_settings": {"sd_model_checkpoint": "llm"}}, "cannot generate images")):
        r = httpx.post(base + "/txt2img", json=body, timeout=30)
        assert r.status_code == 400 and text in r.json()["detail"], (body, r.text)
    r = httpx.post(base + "/img2img", json={"prompt": "x", "init_images": ["%%%"]}, timeout=30)
    assert r.status_code == 400 and "base64" in r.json()["detail"]
    r = httpx.post(base + "/img2img", json={"prompt": "x", "init_images": ["aGVsbG8="]}, timeout=30)
    assert r.status_code == 400 and "not a PNG" in r.json()["detail"]
