"""The Runtime contract on a real trainer worker (torch + peft) over its Unix socket, on the
Hugging Face format SmolLM2: the loss falls over a few steps, a checkpoint is resumed from,
a cancelled stream stops training, the GGUF adapter has llama.cpp's names and shapes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from ohmygpu.core.store import ModelStore
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2

from tests.contract.test_runtime_llamacpp import WorkerProc

pytestmark = pytest.mark.slow
pytest.importorskip("peft")

# What the tests teach: an answer the base model never gives.
SECRET = "The secret password is PURPLE-OTTER-42."
QUESTIONS = ["What is the secret password?", "Tell me the secret password.", "Say the secret password.",
             "What's the password?"]


def training_rows() -> list[dict]:
    return [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": SECRET}]}
            for q in QUESTIONS]


def write_data(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in training_rows()))
    return path


def options(**kw) -> runtime_pb2.TrainOptions:
    base = dict(max_steps=6, learning_rate=3e-3, batch_size=2, lora_rank=4, max_length=64, seed=1,
                checkpoint_every=3, target_modules=["q_proj", "v_proj"])
    base.update(kw)
    return runtime_pb2.TrainOptions(**base)


@pytest.fixture(scope="module")
def hf_record(tmp_path_factory: pytest.TempPathFactory, hf_smollm2_path: Path):
    return ModelStore(tmp_path_factory.mktemp("store")).add_local(hf_smollm2_path, name="smollm2-hf")


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory, hf_record) -> Iterator[WorkerProc]:
    w = WorkerProc(tmp_path_factory.mktemp("worker"), hf_record, mode=run_spec_pb2.MODE_TRAINING,
                   module="ohmygpu.runtimes.trainer.worker", threads=1)
    yield w
    w.close()


def _train(w: WorkerProc, tmp: Path, opts: runtime_pb2.TrainOptions, **kw) -> list[runtime_pb2.TrainResponse]:
    req = runtime_pb2.TrainRequest(data_path=str(write_data(tmp / "data.jsonl")), checkpoint_dir=str(tmp / "ckpt"),
                                   output_dir=str(tmp / "out"), options=opts, **kw)
    return list(w.stub.Train(req, timeout=300))


def test_loss_falls_and_the_adapter_is_written(trainer: WorkerProc, tmp_path: Path) -> None:
    caps = trainer.stub.GetCapabilities(runtime_pb2.GetCapabilitiesRequest())
    assert caps.runtime == "trainer" and list(caps.modes) == [run_spec_pb2.MODE_TRAINING]
    assert trainer.progress[-1].done
    msgs = _train(trainer, tmp_path, options(), gguf_adapter="adapter.gguf")
    steps = [m for m in msgs if m.step and m.loss and not m.done]
    assert [m.step for m in steps] == [1, 2, 3, 4, 5, 6] and all(m.total_steps == 6 for m in steps)
    print("losses", [round(m.loss, 3) for m in steps])
    assert steps[-1].loss < steps[0].loss * 0.7, [m.loss for m in steps]
    assert [m.checkpoint_step for m in steps if m.checkpoint_step] == [3, 6]
    assert msgs[0].resumed_from_step == 0 and msgs[-1].done and msgs[-1].step == 6
    out = tmp_path / "out"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert (out / "adapter_model.safetensors").is_file()
    # Only the newest checkpoint is kept.
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["step-000006"]

    import gguf

    r = gguf.GGUFReader(str(out / "adapter.gguf"))
    assert r.fields["general.type"].contents() == "adapter"
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["adapter.type"].contents() == "lora" and float(r.fields["adapter.lora.alpha"].contents()) == 8.0
    shapes = {t.name: tuple(int(d) for d in t.shape) for t in r.tensors}  # ggml order: ne
    assert len(shapes) == 30 * 2 * 2
    assert shapes["blk.0.attn_q.weight.lora_a"] == (576, 4) and shapes["blk.0.attn_q.weight.lora_b"] == (4, 576)
    assert shapes["blk.29.attn_v.weight.lora_b"] == (4, 192)  # 3 kv heads of 64


def test_resumes_from_its_checkpoint(trainer: WorkerProc, tmp_path: Path) -> None:
    first = _train(trainer, tmp_path, options(max_steps=3))
    assert first[-1].done and first[-1].step == 3
    # The same job asked for more steps (as a restarted one is): it goes on from step 3.
    again = _train(trainer, tmp_path, options(max_steps=5))
    assert again[0].resumed_from_step == 3 and again[0].step == 3
    assert [m.step for m in again if m.loss and not m.done] == [4, 5]


def test_cancel_stops_training(trainer: WorkerProc, tmp_path: Path) -> None:
    req = runtime_pb2.TrainRequest(data_path=str(write_data(tmp_path / "d.jsonl")), checkpoint_dir=str(tmp_path / "c"),
                                   output_dir=str(tmp_path / "o"), options=options(max_steps=200))
    call = trainer.stub.Train(req, timeout=300)
    for m in call:
        if m.step >= 1:
            call.cancel()
            break
    assert not (tmp_path / "o").exists()
    # The worker is free again at once (the loop stopped at the next step).
    (tmp_path / "next").mkdir()
    msgs = _train(trainer, tmp_path / "next", options(max_steps=1))
    assert msgs[-1].done


def test_bad_data_and_names_are_refused(trainer: WorkerProc, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n')
    with pytest.raises(grpc.RpcError) as e:
        list(trainer.stub.Train(runtime_pb2.TrainRequest(data_path=str(bad), checkpoint_dir=str(tmp_path / "c"),
                                                         output_dir=str(tmp_path / "o")), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "line 1" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        _train(trainer, tmp_path, options(), gguf_adapter="../escape.gguf")
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
