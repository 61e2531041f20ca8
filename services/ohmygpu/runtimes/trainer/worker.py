"""The trainer worker: one process, one Hugging Face format base model, training LoRA adapters
with peft (extra `train`).

Started by the daemon like every worker (`python -m ohmygpu.runtimes.trainer.worker --socket
PATH`) for a training job, in MODE_TRAINING, placed and budgeted by the scheduler. Load reads the
base model (LoadRequest.base, else .model); Train streams a TrainResponse per optimizer step
while the loop (loop.py) runs on one dedicated thread, so Health answers throughout; a stream the
daemon cancels stops training before the next step, its last checkpoint kept. A Train whose
checkpoint directory holds a checkpoint resumes from it (resumed_from_step on its first
message). At the end the adapter is in output_dir, and, when asked, as a GGUF LoRA too
(gguf_lora.py) for llama.cpp over a GGUF of the same base.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core.errors import InvalidArgument
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, rss_bytes, run_worker

log = logging.getLogger("ohmygpu.worker.trainer")
_DONE = object()


def model_dir(record: assets_pb2.InstallRecord) -> Path:
    """The directory of a Hugging Face format model: where its weights are."""
    for a in record.artifacts:
        if a.format == assets_pb2.ARTIFACT_FORMAT_SAFETENSORS and a.local_path:
            return Path(a.local_path).parent
    raise InvalidArgument(f"model '{record.name}' has no safetensors weights to train on")


class TrainerRuntime(BaseRuntime):
    """Runtime servicer training LoRA adapters over one loaded base model."""

    runtime_name = "trainer"

    def __init__(self, logs: LogRing) -> None:
        super().__init__(logs)
        self.model: Any = None
        self.tokenizer: Any = None
        self.device = "cpu"
        self.training = asyncio.Lock()
        self._stopping = threading.Event()  # the running Train's cancel flag

    async def GetCapabilities(self, request, context):
        import peft
        import torch
        import transformers

        return runtime_pb2.GetCapabilitiesResponse(
            runtime="trainer", version=f"torch {torch.__version__}, transformers {transformers.__version__}, "
                                       f"peft {peft.__version__}",
            modes=[run_spec_pb2.MODE_TRAINING], formats=[assets_pb2.ARTIFACT_FORMAT_SAFETENSORS],
            gpu=torch.cuda.is_available())

    async def Load(self, request: runtime_pb2.LoadRequest, context) -> AsyncIterator[runtime_pb2.LoadResponse]:
        base = request.base if request.HasField("base") else request.model
        try:
            directory = model_dir(base)
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        res = request.spec.resources
        self.threads = res.cpu_threads or (os.cpu_count() or 1)
        self.device = res.device if res.device.startswith("cuda") else "cpu"
        self.state = runtime_pb2.WORKER_STATE_LOADING
        yield runtime_pb2.LoadResponse(progress=0.0, stage="loading the base model")
        started = time.perf_counter()
        try:
            self.model, self.tokenizer = await asyncio.to_thread(self._load, directory)
        except (OSError, ValueError, RuntimeError) as e:
            self.state = runtime_pb2.WORKER_STATE_FAILED
            log.error("load failed: %s", e)  # the log may name the path; the answer must not
            await context.abort(grpc.StatusCode.INTERNAL, "the base model is not loadable by transformers "
                                "(its config or weights are damaged or of an unsupported architecture)")
        self.model_name = base.name
        self.state = runtime_pb2.WORKER_STATE_READY
        log.info("loaded %s for training in %.2fs (device=%s, threads=%d)", base.name,
                 time.perf_counter() - started, self.device, self.threads)
        yield runtime_pb2.LoadResponse(progress=1.0, stage="ready", done=True, memory_bytes=rss_bytes())

    def _load(self, directory: Path) -> tuple[Any, Any]:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(max(1, self.threads))
        # float32 on the CPU (bf16 matmuls there are slow and imprecise); bf16 on a GPU, with
        # the LoRA weights themselves in float32 (peft's autocast_adapter_dtype).
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        tokenizer = AutoTokenizer.from_pretrained(directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).to(self.device)
        return model, tokenizer

    async def Unload(self, request, context):
        self.model = self.tokenizer = None
        self.model_name = ""
        self.state = runtime_pb2.WORKER_STATE_IDLE
        return runtime_pb2.UnloadResponse(memory_bytes=rss_bytes())

    async def GetStatus(self, request, context):
        return self.status()

    async def Train(self, request: runtime_pb2.TrainRequest, context) -> AsyncIterator[runtime_pb2.TrainResponse]:
        if self.model is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no base model loaded")
        if self.training.locked() and not self._stopping.is_set():
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this worker is already training")
        gguf_name = request.gguf_adapter
        if gguf_name and (Path(gguf_name).name != gguf_name or not gguf_name.endswith(".gguf")):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "gguf_adapter must be a file name ending in .gguf")
        from ohmygpu.core import train_data

        try:
            examples = train_data.parse(Path(request.data_path).read_bytes())
        except OSError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the training data cannot be read")
        except InvalidArgument as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, e.message)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        async with self.training:  # a cancelled run still stopping is waited for (one step at most)
            self._stopping = cancelled
            self.in_flight += 1
            thread_result: list[Any] = []

            def run() -> None:
                try:
                    thread_result.append(self._train(request, examples, cancelled,
                                                     lambda m: loop.call_soon_threadsafe(queue.put_nowait, m)))
                except BaseException as e:  # noqa: BLE001 - reported on the stream
                    thread_result.append(e)
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, _DONE)

            thread = threading.Thread(target=run, name="trainer", daemon=True)
            thread.start()
            try:
                while (item := await queue.get()) is not _DONE:
                    yield item
                outcome = thread_result[0] if thread_result else RuntimeError("the training thread vanished")
                if isinstance(outcome, ValueError):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(outcome)[:500])
                if isinstance(outcome, BaseException):
                    log.error("training failed: %r", outcome)
                    await context.abort(grpc.StatusCode.INTERNAL, f"training failed: {str(outcome)[:300]}")
                yield outcome
            finally:
                cancelled.set()
                self.in_flight -= 1
                await asyncio.to_thread(thread.join)

    def _train(self, request: runtime_pb2.TrainRequest, examples: list, cancelled: threading.Event,
               emit: Any) -> runtime_pb2.TrainResponse:
        import torch
        from peft import get_peft_model_state_dict

        from ohmygpu.runtimes.trainer import gguf_lora, loop

        torch.set_num_threads(max(1, self.threads))
        plan = loop.Plan.of(request.options)
        output = Path(request.output_dir)
        model, loss, steps = loop.train(self.model, self.tokenizer, examples, plan, device=self.device,
                                        checkpoint_dir=Path(request.checkpoint_dir), output_dir=output,
                                        emit=emit, cancelled=cancelled)
        try:
            if request.gguf_adapter:
                emit(runtime_pb2.TrainResponse(step=steps, total_steps=steps, stage="converting the adapter to GGUF"))
                n = gguf_lora.write(get_peft_model_state_dict(model), self.model.config, plan.alpha,
                                    output / request.gguf_adapter)
                log.info("wrote the GGUF adapter: %d tensors", n)
        finally:
            self.model = model.unload()  # the base without LoRA layers: the next Train starts clean
        return runtime_pb2.TrainResponse(step=steps, total_steps=steps, loss=loss, done=True, stage="done",
                                         learning_rate=plan.learning_rate, epoch=float(plan.epochs or 0))


def main() -> None:
    run_worker(TrainerRuntime)


if __name__ == "__main__":
    main()
