"""The stable-diffusion.cpp worker: one process, one sd.cpp context, serving the Runtime
contract's GenerateImage (text to image, image to image).

Started by the daemon as `python -m ohmygpu.runtimes.sdcpp.worker --socket PATH`. Every call into
the library (load, generate, free) runs on ONE dedicated thread: ggml keeps a thread team per
calling thread, and sd.cpp's progress and log hooks are process-wide globals. Progress crosses to
the event loop through an asyncio queue (call_soon_threadsafe), so the client sees each denoising
step as it ends and Health answers throughout.

Cancellation: upstream sd.cpp has no abort hook (its progress callback returns nothing, and the
ggml abort callback of its backend is not reachable from Python). setup.sh builds it with our
patch (scripts/patches/stable-diffusion-cpp-abort.patch), whose sd_set_abort_callback is asked
before every denoising step: a cancelled request stops at the next step and the worker takes the
next request. With a library built without the patch (`abort_supported()` is false) a request
for several images is still run one image per library call and stops before the next image.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from ohmygpu.run.v1 import run_spec_pb2
from ohmygpu.runtime.v1 import runtime_pb2
from ohmygpu.runtimes.api.worker_server import BaseRuntime, LogRing, rss_bytes, run_worker
from ohmygpu.runtimes.sdcpp import png
from ohmygpu.runtimes.sdcpp.params import SAMPLERS, BadRequest, Plan, plan
from ohmygpu.runtimes.sdcpp.pipeline_view import FORMATS, ModelFiles

log = logging.getLogger("ohmygpu.worker.sdcpp")
_DONE = object()
# Symbols a GPU build of ggml exports (CUDA also stands for HIP builds, which keep its names).
_GPU_SYMBOLS = ("ggml_backend_cuda_init", "ggml_backend_vk_init", "ggml_backend_metal_init",
                "ggml_backend_sycl_init")
_SD_LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}
_FALLBACK_SAMPLER = "euler_a"  # sd.cpp's own default for SD 1.x / 2.x / XL


class GenerationFailed(RuntimeError):
    """sd.cpp returned no image (its log says why; the answer must not name paths)."""


def abort_supported() -> bool:
    """Whether the installed library has our patch's sd_set_abort_callback (see the module doc)."""
    from stable_diffusion_cpp import stable_diffusion_cpp as lowlevel

    return hasattr(lowlevel._lib, "sd_set_abort_callback")


def library_has_gpu() -> bool:
    """Whether the installed stable-diffusion-cpp-python was built with a GPU backend."""
    from stable_diffusion_cpp import stable_diffusion_cpp as lowlevel

    return any(hasattr(lowlevel._lib, name) for name in _GPU_SYMBOLS)


def fit(image: Any, width: int, height: int) -> Any:
    """`image` cut to the requested size. sd.cpp rounds a UNet model's size up to a multiple of
    64 (8 for the VAE times 8 for the UNet's downsampling) and returns that; the contract takes
    multiples of 8, so the centre of the larger image is what was asked for."""
    if (image.width, image.height) == (width, height):
        return image
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


class SdcppRuntime(BaseRuntime):
    """Runtime servicer over one stable_diffusion_cpp.StableDiffusion."""

    runtime_name = "sdcpp"

    def __init__(self, logs: LogRing) -> None:
        super().__init__(logs)
        self.sd: Any = None
        self.default_sampler = _FALLBACK_SAMPLER
        self.lock = asyncio.Lock()
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdcpp")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sink: Callable[[int, int], None] | None = None  # where sd.cpp's progress goes now
        self._abort: threading.Event | None = None  # the running generation's cancel flag
        self._hooks: list[Any] = []  # the ctypes callbacks: alive as long as sd.cpp may call them

    async def GetCapabilities(self, request, context):
        import stable_diffusion_cpp

        return runtime_pb2.GetCapabilitiesResponse(
            runtime="sdcpp", version=f"stable-diffusion-cpp-python {stable_diffusion_cpp.__version__}",
            modes=[run_spec_pb2.MODE_IMAGE], formats=list(FORMATS), gpu=library_has_gpu())

    # --- the model thread -------------------------------------------------------------------

    async def _on_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def _install_hooks(self) -> None:
        """Route sd.cpp's log to ours and its progress to `self._sink`, once. Set here, not per
        call as the library's generate_image does: its per-call callback object is freed after
        the call while sd.cpp keeps the pointer (the next load would call freed memory)."""
        if self._hooks:
            return
        from stable_diffusion_cpp import stable_diffusion_cpp as lowlevel

        loop = self._loop

        @lowlevel.sd_progress_callback
        def progress(step: int, steps: int, _time: float, _data: Any) -> None:
            sink = self._sink
            if sink is not None:
                try:
                    sink(step, steps)
                except Exception:  # noqa: BLE001 - an exception must not unwind into C
                    log.exception("progress hook failed")

        @lowlevel.sd_log_callback
        def on_log(level: int, text: bytes, _data: Any) -> None:
            lvl = _SD_LOG_LEVELS.get(level, logging.INFO)
            if lvl < logging.INFO or loop is None:
                return
            line = text.decode("utf-8", "replace").rstrip()
            if line:  # logged on the loop: the log ring's followers are asyncio queues
                loop.call_soon_threadsafe(log.log, lvl, "sd.cpp: %s", line)

        lowlevel.sd_set_progress_callback(progress, ctypes.c_void_p(0))
        lowlevel.sd_set_log_callback(on_log, ctypes.c_void_p(0))
        self._hooks = [progress, on_log]
        if abort_supported():
            @ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p)
            def should_abort(_data: Any) -> bool:
                flag = self._abort
                return flag is not None and flag.is_set()

            setter = lowlevel._lib.sd_set_abort_callback
            setter.argtypes = [ctypes.CFUNCTYPE(ctypes.c_bool, ctypes.c_void_p), ctypes.c_void_p]
            setter.restype = None
            setter(should_abort, None)
            self._hooks.append(should_abort)

    def _load(self, arguments: dict[str, str], threads: int, on_tensors: Callable[[int, int], None]) -> None:
        """Load the files of `arguments` (StableDiffusion's path keywords) as `self.sd` (set here, on the model thread, so a Load the client gave up
        on still leaves the model where Unload and the next Load free it)."""
        from stable_diffusion_cpp import SAMPLE_METHOD_MAP, StableDiffusion
        from stable_diffusion_cpp import stable_diffusion_cpp as lowlevel

        self._install_hooks()
        self._free()
        self._sink = on_tensors  # sd.cpp reports tensors read through the same hook
        try:
            # verbose=True: the library's quiet mode redirects the process's stdout/stderr file
            # descriptors during each call, which would swallow every other thread's log lines.
            sd = StableDiffusion(**arguments, n_threads=threads, vae_decode_only=False, verbose=True)
        finally:
            self._sink = None
        if not sd._model.model:
            # sd.cpp failed (its log says why). The library's own check compares the returned
            # ctypes pointer with None, which a NULL pointer never is; and its free_sd_ctx would
            # dereference that NULL at garbage collection, so the pointer is dropped first.
            sd._model.model = None
            raise RuntimeError("stable-diffusion.cpp returned no context")
        self.sd = sd
        method = lowlevel.sd_get_default_sample_method(self.sd.model)
        names = [k for k, v in SAMPLE_METHOD_MAP.items() if v is not None and int(v) == int(method)]
        self.default_sampler = names[0] if names and names[0] in SAMPLERS else _FALLBACK_SAMPLER

    def _free(self) -> None:
        if self.sd is not None:
            self.sd.close()
            self.sd = None

    def _generate(self, p: Plan, init: Any, mask: Any, emit: Callable[[Any], None],
                  cancelled: threading.Event) -> None:
        for index in range(p.count):
            if cancelled.is_set():
                return
            done = 0

            def on_step(step: int, steps: int, index: int = index) -> None:
                nonlocal done
                if cancelled.is_set() or not done < step <= steps:
                    return  # step 0 is the start; the cancelled stream has no reader
                done = step
                emit(runtime_pb2.GenerateImageResponse(progress=runtime_pb2.ImageProgress(
                    step=step, steps=steps, image=index, images=p.count)))

            started = time.perf_counter_ns()
            self._sink = on_step
            self._abort = cancelled
            try:
                images = self.sd.generate_image(
                    prompt=p.prompt, negative_prompt=p.negative_prompt, init_image=init, mask_image=mask,
                    width=p.width, height=p.height, cfg_scale=p.cfg_scale, sample_method=p.sampler,
                    sample_steps=p.steps, strength=p.strength, seed=p.seed_of(index), batch_count=1)
            except ValueError as e:  # the library's NULL result ("NULL pointer access") or checks
                if cancelled.is_set():
                    log.info("generation cancelled in image %d of %d", index + 1, p.count)
                    return  # stopped by the abort hook at a step boundary: nobody reads on
                raise GenerationFailed(str(e)) from e
            finally:
                self._sink = None
                self._abort = None
            if not images:
                raise GenerationFailed("no image returned")
            image = fit(images[0], p.width, p.height)
            text = p.parameters(index, self.model_name)
            emit(runtime_pb2.GenerateImageResponse(image=runtime_pb2.GeneratedImage(
                png=png.encode(image, text), seed=p.seed_of(index), width=image.width,
                height=image.height, parameters=text, index=index,
                generation_ns=time.perf_counter_ns() - started)))

    # --- the contract -----------------------------------------------------------------------

    async def Load(self, request: runtime_pb2.LoadRequest, context) -> AsyncIterator[runtime_pb2.LoadResponse]:
        files: ModelFiles | None = None
        try:
            try:
                files = ModelFiles(request.model)
            except OSError as e:
                log.error("could not link the pipeline's files: %s", e)  # the log may name paths
                await context.abort(grpc.StatusCode.INTERNAL, "the worker could not prepare the model's files")
            path = files.path
            if path is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no safetensors or GGUF artifact "
                                    "(or diffusers pipeline with a UNet) to load")
            self._loop = asyncio.get_running_loop()
            self.threads = request.spec.resources.cpu_threads or (os.cpu_count() or 1)
            self.state = runtime_pb2.WORKER_STATE_LOADING
            yield runtime_pb2.LoadResponse(progress=0.0, stage="reading weights")
            started = time.perf_counter()
            loop = self._loop
            queue: asyncio.Queue[Any] = asyncio.Queue()
            reported = 0.0

            def on_tensors(done: int, total: int) -> None:  # on the model thread
                nonlocal reported
                share = done / total if total > 0 else 0.0
                if share - reported >= 0.1:
                    reported = share
                    loop.call_soon_threadsafe(queue.put_nowait, runtime_pb2.LoadResponse(
                        progress=0.9 * share, stage="reading weights"))

            async with self.lock:
                fut = loop.run_in_executor(self.executor, self._load, files.arguments, self.threads, on_tensors)
                fut.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
                try:
                    while (item := await queue.get()) is not _DONE:
                        yield item
                finally:
                    if not fut.done():
                        await asyncio.wait([fut])
                error = fut.exception()
                if error is not None:
                    self.state = runtime_pb2.WORKER_STATE_FAILED
                    log.error("load failed: %s", error)  # the log may name the path; the answer must not
                    await context.abort(grpc.StatusCode.INTERNAL, "the model is not loadable: stable-diffusion.cpp "
                                        "could not load it (not a checkpoint layout it knows, damaged, or "
                                        "missing tensors; the worker log has the details)")
            self.model_name = request.model.name
            self.state = runtime_pb2.WORKER_STATE_READY
            log.info("loaded %s in %.2fs (threads=%d, default sampler %s)", self.model_name,
                     time.perf_counter() - started, self.threads, self.default_sampler)
            yield runtime_pb2.LoadResponse(progress=1.0, stage="ready", done=True, memory_bytes=rss_bytes())
        finally:
            if files is not None:
                files.close()  # the load is over (sd.cpp holds the weights): the links can go

    async def Unload(self, request, context):
        async with self.lock:
            await self._on_thread(self._free)
            self.model_name = ""
            self.state = runtime_pb2.WORKER_STATE_IDLE
        return runtime_pb2.UnloadResponse(memory_bytes=rss_bytes())

    async def GetStatus(self, request, context):
        return self.status()

    async def GenerateImage(self, request: runtime_pb2.GenerateImageRequest, context,
                            ) -> AsyncIterator[runtime_pb2.GenerateImageResponse]:
        if self.sd is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "no model loaded")
        try:
            init = await asyncio.to_thread(png.decode_init, request.init_image) if request.init_image else None
            p = plan(request, default_sampler=self.default_sampler, init_size=init.size if init else None)
            mask = None
            if request.mask_image:
                if init is None:
                    raise BadRequest("mask_image (inpainting) needs init_image, the image to repaint")
                mask = await asyncio.to_thread(png.decode_mask, request.mask_image, request.mask_mode,
                                               init.size, request.mask_blur)
        except BadRequest as e:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()

        def emit(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        async with self.lock:
            self.in_flight += 1
            fut = loop.run_in_executor(self.executor, self._generate, p, init, mask, emit, cancelled)
            fut.add_done_callback(lambda _: loop.call_soon_threadsafe(queue.put_nowait, _DONE))
            try:
                while (item := await queue.get()) is not _DONE:
                    yield item
                error = fut.exception()
                if error is not None:
                    log.error("generation failed: %r", error)  # may name files; the answer not
                    await context.abort(grpc.StatusCode.INTERNAL, "image generation failed inside "
                                        "stable-diffusion.cpp (the worker log has the details)")
            finally:
                cancelled.set()
                self.in_flight -= 1
                if not fut.done():
                    await asyncio.wait([fut])  # the model thread is free before the next request


def main() -> None:
    run_worker(SdcppRuntime)


if __name__ == "__main__":
    main()
