"""The header reader against the format's reference reader: every file the `safetensors` library
refuses is refused here too, by name and with what is wrong, and never with a bare Python error."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from engine.diffusion.safetensors_file import WeightsFileError, read_header
from tests.diffusion.bad_weights import MALFORMED, write_malformed


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_a_malformed_file_is_refused_by_name_saying_what_is_wrong(tmp_path: Path, kind: str) -> None:
    path = write_malformed(tmp_path / "broken.safetensors", kind)
    with pytest.raises(SafetensorError), safe_open(str(path), framework="pt"):
        pass  # the reference implementation refuses the file: it is malformed, not merely unusual
    with pytest.raises(WeightsFileError) as refused:
        read_header(path)
    assert str(refused.value).startswith("broken.safetensors: ")
    assert MALFORMED[kind][1] in str(refused.value)


def test_a_well_formed_file_reads_as_the_reference_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    tensors = {
        "a.weight": torch.zeros(3, 5, dtype=torch.bfloat16),
        "b": torch.zeros((), dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float16),
        "f8": torch.zeros(7, dtype=torch.float8_e4m3fn),
        "mask": torch.zeros(3, dtype=torch.bool),
    }
    save_file(tensors, path, metadata={"format": "pt"})
    header = read_header(path)
    with safe_open(str(path), framework="pt") as reference:
        assert set(header.tensors) == set(reference.keys())
        for name in reference.keys():  # noqa: SIM118 (a safe_open handle is not a mapping)
            assert header.tensors[name].shape == tuple(reference.get_slice(name).get_shape())
            assert header.tensors[name].dtype == reference.get_slice(name).get_dtype()
        assert header.metadata == reference.metadata() == {"format": "pt"}
