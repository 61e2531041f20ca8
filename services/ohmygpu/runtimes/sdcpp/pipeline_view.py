"""What stable-diffusion.cpp is given to load: the model's single file; for a model published as
several files each file under its role's argument (core/diffusion_parts.py); or for a diffusers
pipeline a folder that shows each chosen component's weights under the one name sd.cpp reads.

sd.cpp opens a pipeline as `<folder>/unet/diffusion_pytorch_model.safetensors`,
`vae/diffusion_pytorch_model.safetensors`, `text_encoder/model.safetensors` and
`text_encoder_2/model.safetensors`, and no variant (`.fp16.safetensors`). The store registers
whichever variant the pull chose, in the Hugging Face cache's snapshot folder (or, on a node, in
the files the node received), so the worker links those files into a private folder of its own
under the plain names. Links, not copies: the weights are read once, by sd.cpp.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ohmygpu.assets.v1 import assets_pb2
from ohmygpu.core import diffusion_parts, diffusion_pipeline

FORMATS = (assets_pb2.ARTIFACT_FORMAT_SAFETENSORS, assets_pb2.ARTIFACT_FORMAT_GGUF)


class ModelFiles:
    """What to hand sd.cpp for `record` (`arguments`: StableDiffusion's path keywords; `path`:
    the model, or the set's diffusion model), and the private folder to remove after the load."""

    def __init__(self, record: assets_pb2.InstallRecord) -> None:
        self.view: Path | None = None
        roles = [(a.role, a.local_path) for a in record.artifacts if a.role and a.local_path]
        if roles:
            self.arguments = diffusion_parts.sdcpp_arguments(roles)
            self.path = self.arguments.get(diffusion_parts.SDCPP_ARGUMENT[diffusion_parts.DENOISER])
            return
        self.path = self._pick(record)
        self.arguments = {"model_path": self.path} if self.path is not None else {}

    def _pick(self, record: assets_pb2.InstallRecord) -> str | None:
        names = {a.filename: a.local_path for a in record.artifacts if a.local_path}
        if diffusion_pipeline.holds_pipeline(names):
            weights = diffusion_pipeline.components(names)
            self.view = Path(tempfile.mkdtemp(prefix="omg-sd-pipeline-"))
            try:
                for component, rel in weights.items():
                    link = self.view / component / f"{diffusion_pipeline.COMPONENTS[component]}.safetensors"
                    link.parent.mkdir()
                    link.symlink_to(Path(names[rel]).resolve())
            except OSError:
                self.close()
                raise
            return str(self.view)
        # A single file: the artifact in the record's own format, else any loadable one.
        for wanted in ((record.format,) if record.format in FORMATS else ()) + FORMATS:
            for a in record.artifacts:
                if a.format == wanted and a.local_path:
                    return a.local_path
        return None

    def close(self) -> None:
        """sd.cpp has read the weights into its own buffers by now: the links can go."""
        if self.view is not None:
            shutil.rmtree(self.view, ignore_errors=True)
            self.view = None
