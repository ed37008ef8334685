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

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024


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
        raise WeightsFileError(f"{path.name}: unsupported weights file type '{suffix}'; expected .safetensors")


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
                raise WeightsFileError(f"{path.name}: not a safetensors file (header size {size} is implausible)")
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
