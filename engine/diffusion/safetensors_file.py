"""Reading what a weights file holds (names, dtypes, shapes, metadata) without loading any tensor.

Only safetensors is accepted: pickle-based formats (.ckpt, .pt, .pth, .bin) execute code when
they are loaded, so a file in one of them is refused with a message saying why.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024

RANDOM_TEST_WEIGHTS_METADATA = {"engine.weights": "random-test"}
"""Metadata the engine writes into the tiny random checkpoints it makes for tests and demos, so that
loading one anywhere is announced instead of producing noise that looks like a broken model."""

TORCH_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}


class WeightsFileError(ValueError):
    """A weights file that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    """safetensors dtype code: F32, F16, BF16, F8_E4M3, ..."""
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str]

    @property
    def holds_random_test_weights(self) -> bool:
        return all(self.metadata.get(k) == v for k, v in RANDOM_TEST_WEIGHTS_METADATA.items())

    def under(self, prefix: str) -> dict[str, TensorInfo]:
        """The tensors whose names start with `prefix`, with the prefix removed."""
        n = len(prefix)
        return {name[n:]: info for name, info in self.tensors.items() if name.startswith(prefix)}


def _refuse_pickle(path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in PICKLE_EXTENSIONS:
        raise WeightsFileError(
            f"{path.name}: '{suffix}' files are Python pickles, which run arbitrary code when loaded; "
            "only .safetensors weights are accepted. Convert the file to safetensors "
            "(or download the .safetensors release of the model)."
        )
    if suffix not in SAFETENSORS_EXTENSIONS:
        raise WeightsFileError(
            f"{path.name}: unsupported weights file type '{suffix}'; expected .safetensors"
        )


def read_header(path: str | Path) -> SafetensorsHeader:
    path = Path(path)
    _refuse_pickle(path)
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise WeightsFileError(f"{path.name}: too short to be a safetensors file")
            (size,) = struct.unpack("<Q", prefix)
            if size > MAX_HEADER_BYTES:
                raise WeightsFileError(
                    f"{path.name}: not a safetensors file (header size {size} is implausible)"
                )
            raw = f.read(size)
    except OSError as exc:
        raise WeightsFileError(f"{path.name}: cannot be read ({exc.strerror})") from exc
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"{path.name}: not a safetensors file (its header is not JSON)") from exc
    metadata = header.pop("__metadata__", None) or {}
    tensors = {name: TensorInfo(entry["dtype"], tuple(entry["shape"])) for name, entry in header.items()}
    return SafetensorsHeader(path=path, tensors=tensors, metadata=metadata)


def load_tensors(
    path: str | Path, prefix: str = "", device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix` (removed), read onto `device` in their stored dtype."""
    names = [name for name in read_header(path).tensors if name.startswith(prefix)]
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {name[len(prefix) :]: f.get_tensor(name) for name in names}
