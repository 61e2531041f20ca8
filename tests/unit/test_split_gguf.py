"""Split GGUF models (llama.cpp's gguf-split layout): names, quantization and the header of
all parts together, on SmolLM2 split in two by llama.cpp's own gguf writer."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from ohmygpu.core.errors import IncompleteSplitModel
from ohmygpu.core.gguf import read_header, read_model_header
from ohmygpu.core.names import is_later_shard, is_projector, quant_of, shard_names

from tests.helpers import smollm2_path, split_gguf


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return split_gguf(smollm2_path(), tmp_path_factory.mktemp("split"), parts=2)


def test_names_of_parts() -> None:
    assert quant_of("Qwen2.5-72B-Instruct-Q4_K_M-00002-of-00012.gguf") == "Q4_K_M"
    assert quant_of("Q8_0/model.Q8_0-00001-of-00003.gguf") == "Q8_0"
    assert quant_of("smol.Q4_1.gguf") == "Q4_1" and quant_of("model.gguf") == ""
    assert is_later_shard("m-Q4_K_M-00002-of-00003.gguf") and not is_later_shard("m-Q4_K_M-00001-of-00003.gguf")
    assert not is_later_shard("m.Q4_K_M.gguf")
    assert is_projector("mmproj-model-f16.gguf") and not is_projector("model-f16.gguf")
    assert shard_names("m-Q4_K_M-00001-of-00003.gguf", 3) == [
        "m-Q4_K_M-00001-of-00003.gguf", "m-Q4_K_M-00002-of-00003.gguf", "m-Q4_K_M-00003-of-00003.gguf"]


def test_header_of_all_parts_equals_the_whole(parts: list[Path]) -> None:
    whole = read_header(smollm2_path())
    first_alone = read_header(parts[0])
    assert first_alone.parameter_count < whole.parameter_count  # one part holds some tensors only
    split = read_model_header(parts[0])
    assert split.shards == 2
    assert split.parameter_count == whole.parameter_count
    assert split.tensor_count == whole.tensor_count
    assert split.tensor_data_bytes == whole.tensor_data_bytes
    assert split.quantization == whole.quantization == "Q4_1"


def test_later_or_missing_parts_are_clear_errors(parts: list[Path], tmp_path: Path) -> None:
    with pytest.raises(IncompleteSplitModel, match=r"part 2 of 2 .*use the first part, .*-00001-of-00002\.gguf"):
        read_model_header(parts[1])
    alone = tmp_path / parts[0].name
    shutil.copyfile(parts[0], alone)
    with pytest.raises(IncompleteSplitModel, match=r"part 2 of 2 \(.*-00002-of-00002\.gguf\) is missing"):
        read_model_header(alone)
    renamed = tmp_path / "renamed.gguf"
    shutil.copyfile(parts[0], renamed)
    with pytest.raises(IncompleteSplitModel, match="not named PREFIX-00001-of-NNNNN.gguf"):
        read_model_header(renamed)
