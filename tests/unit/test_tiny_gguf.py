"""scripts/tiny_gguf.py: the small model scripts/gpu-check.sh carries to a GPU machine passes the
store's add-time checks and runs in llama.cpp (a GPU check on a model we refuse would test nothing)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ohmygpu.core.gguf import read_model_header
from ohmygpu.core.gguf_check import check_loadable

from tests.helpers import load_script, smollm2_path

tiny = load_script("tiny_gguf")


@pytest.mark.slow
def test_tiny_gguf_is_small_loadable_and_generates(tmp_path: Path) -> None:
    path = tiny.write_tiny(tmp_path / "tiny.gguf", smollm2_path())
    assert path.stat().st_size < 12_000_000  # it must fit a device run's 64 MiB carry
    header = read_model_header(path)
    check_loadable(header, path)  # raises UnloadableModel if the store would refuse it
    from llama_cpp import Llama

    llm = Llama(str(path), n_ctx=256, n_threads=1, verbose=False)
    out = llm.create_chat_completion(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert out["usage"]["completion_tokens"] == 4
