"""Reading what a weights file holds (names, dtypes, shapes, metadata) without loading any tensor.

Only safetensors is accepted: pickle-based formats (.ckpt, .pt, .pth, .bin) execute code when
they are loaded, so a file in one of them is refused with a message saying why.
"""

from __future__ import annotations

import json
import math
import os
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


DTYPE_BITS = {
    "BOOL": 8,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
}
"""Bits per element of each dtype the safetensors format defines."""


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
    """The file's tensor names, dtypes and shapes and its metadata, checked as the safetensors format
    defines them (and as the loader will check them): a damaged or foreign file is refused here, by name
    and with what is wrong, instead of failing later with a KeyError or TypeError deep in a loader."""
    path = Path(path)
    _refuse_pickle(path)
    try:
        with path.open("rb") as f:
            file_size = os.fstat(f.fileno()).st_size
            prefix = f.read(8)
            if len(prefix) != 8:
                raise WeightsFileError(f"{path.name}: too short to be a safetensors file")
            (size,) = struct.unpack("<Q", prefix)
            if size > min(MAX_HEADER_BYTES, file_size - 8):
                bound = "the format's limit" if size > MAX_HEADER_BYTES else "what the file holds"
                raise WeightsFileError(
                    f"{path.name}: not a safetensors file (its header length, {size} bytes, is more than "
                    f"{bound}: {min(MAX_HEADER_BYTES, file_size - 8)} bytes)"
                )
            raw = f.read(size)
    except OSError as exc:
        raise WeightsFileError(f"{path.name}: cannot be read ({exc.strerror})") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsFileError(f"{path.name}: not a safetensors file (its header is not JSON)") from exc
    except RecursionError:
        raise WeightsFileError(f"{path.name}: not a safetensors file (its header nests too deeply)") from None
    try:
        tensors, metadata = _parse_header(header, data_bytes=file_size - 8 - size)
    except _HeaderProblem as problem:
        raise WeightsFileError(f"{path.name}: not a valid safetensors file: {problem}") from None
    return SafetensorsHeader(path=path, tensors=tensors, metadata=metadata)


class _HeaderProblem(ValueError):
    """What is wrong with a header, before the file's name is put in front of it."""


def _parse_header(header: object, data_bytes: int) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    if not isinstance(header, dict):
        raise _HeaderProblem(f"its header is a JSON {type(header).__name__}, not an object of tensors")
    metadata = header.get("__metadata__") or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _HeaderProblem("'__metadata__' must map names to strings")
    tensors: dict[str, TensorInfo] = {}
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        info, begin, end = _parse_entry(name, entry)
        if end > data_bytes:
            raise _HeaderProblem(
                f"tensor '{name}' ends at byte {end} of the data, which holds {data_bytes} bytes "
                "(the file is truncated or its header is wrong)"
            )
        tensors[name] = info
        spans.append((begin, end, name))
    covered = 0
    for begin, end, name in sorted(spans):
        if begin != covered:
            raise _HeaderProblem(f"tensor '{name}' starts at byte {begin}, not {covered} (overlap or gap)")
        covered = end
    if covered != data_bytes:
        raise _HeaderProblem(f"the tensors hold {covered} bytes but the file has {data_bytes} bytes of data")
    return tensors, metadata


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _parse_entry(name: str, entry: object) -> tuple[TensorInfo, int, int]:
    """A tensor's info and the span of its bytes in the data section."""
    if not isinstance(entry, dict):
        raise _HeaderProblem(f"tensor '{name}' is a JSON {type(entry).__name__}, not an object")
    missing = [key for key in ("dtype", "shape", "data_offsets") if key not in entry]
    if missing:
        raise _HeaderProblem(f"tensor '{name}' has no {', '.join(repr(key) for key in missing)}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
        raise _HeaderProblem(f"tensor '{name}' has dtype {dtype!r}; known: {', '.join(DTYPE_BITS)}")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise _HeaderProblem(f"tensor '{name}' has shape {shape!r}, not a list of non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(n) for n in offsets)):
        raise _HeaderProblem(f"tensor '{name}' has data_offsets {offsets!r}, not [begin, end] byte counts")
    begin, end = offsets
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if end < begin or bits != 8 * (end - begin):
        raise _HeaderProblem(
            f"tensor '{name}' ({dtype}, shape {shape}) needs {bits / 8:g} bytes but data_offsets "
            f"{offsets} hold {end - begin}"
        )
    return TensorInfo(dtype, tuple(shape)), begin, end


def load_tensors(
    path: str | Path, prefix: str = "", device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """The tensors whose names start with `prefix` (removed), read onto `device` in their stored dtype."""
    names = [name for name in read_header(path).tensors if name.startswith(prefix)]
    with safe_open(str(path), framework="pt", device=str(device)) as f:
        return {name[len(prefix) :]: f.get_tensor(name) for name in names}
