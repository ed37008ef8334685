"""Safetensors files damaged in each way the format can be: for the header reader, the endpoint loader
and the service, which must each refuse them by name instead of failing with a traceback."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

GOOD_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
DATA = bytes(8)


def safetensors_bytes(header: Any, data: bytes = DATA, length: int | None = None) -> bytes:
    """A file as the format lays it out: u64 header length, JSON header, data; `header` may be any JSON
    value or raw bytes, `length` a header length that disagrees with the header."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


MALFORMED: dict[str, tuple[bytes, str]] = {
    "header is a list": (safetensors_bytes([GOOD_ENTRY]), "header is a JSON list"),
    "header is a number": (safetensors_bytes(42), "header is a JSON int"),
    "header is not JSON": (safetensors_bytes(b"{not json"), "header is not JSON"),
    "header is not UTF-8": (safetensors_bytes(b'{"\xff": 1}'), "header is not JSON"),
    "entry is not an object": (safetensors_bytes({"w": [0, 8]}), "tensor 'w' is a JSON list"),
    "entry without dtype": (
        safetensors_bytes({"w": {"shape": [2], "data_offsets": [0, 8]}}),
        "tensor 'w' has no 'dtype'",
    ),
    "entry without shape": (
        safetensors_bytes({"w": {"dtype": "F32", "data_offsets": [0, 8]}}),
        "tensor 'w' has no 'shape'",
    ),
    "entry without data_offsets": (
        safetensors_bytes({"w": {"dtype": "F32", "shape": [2]}}),
        "tensor 'w' has no 'data_offsets'",
    ),
    "dtype is a number": (safetensors_bytes({"w": {**GOOD_ENTRY, "dtype": 5}}), "has dtype 5"),
    "unknown dtype": (safetensors_bytes({"w": {**GOOD_ENTRY, "dtype": "F13"}}), "has dtype 'F13'"),
    "shape of strings": (safetensors_bytes({"w": {**GOOD_ENTRY, "shape": ["2"]}}), "has shape ['2']"),
    "shape of booleans": (safetensors_bytes({"w": {**GOOD_ENTRY, "shape": [True, True]}}), "has shape"),
    "negative shape": (safetensors_bytes({"w": {**GOOD_ENTRY, "shape": [-2]}}), "has shape [-2]"),
    "shape is a string": (safetensors_bytes({"w": {**GOOD_ENTRY, "shape": "2"}}), "has shape '2'"),
    "offsets of three": (
        safetensors_bytes({"w": {**GOOD_ENTRY, "data_offsets": [0, 4, 8]}}),
        "not [begin, end]",
    ),
    "offsets of floats": (
        safetensors_bytes({"w": {**GOOD_ENTRY, "data_offsets": [0, 8.0]}}),
        "not [begin, end]",
    ),
    "offsets disagree with shape": (
        safetensors_bytes({"w": {**GOOD_ENTRY, "data_offsets": [0, 4]}}),
        "needs 8 bytes but data_offsets [0, 4] hold 4",
    ),
    "offsets beyond the file": (
        safetensors_bytes({"w": {**GOOD_ENTRY, "shape": [2000], "data_offsets": [0, 8000]}}),
        "ends at byte 8000 of the data, which holds 8 bytes",
    ),
    "overlapping tensors": (
        safetensors_bytes({"v": GOOD_ENTRY, "w": GOOD_ENTRY}),
        "starts at byte 0, not 8",
    ),
    "data left over": (safetensors_bytes({"w": GOOD_ENTRY}, data=bytes(16)), "hold 8 bytes but"),
    "metadata of numbers": (
        safetensors_bytes({"__metadata__": {"format": 1}, "w": GOOD_ENTRY}),
        "'__metadata__' must map names to strings",
    ),
    "deep nesting": (
        safetensors_bytes(b'{"w": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        "nests too deeply",
    ),
    "huge header length": (
        safetensors_bytes({"w": GOOD_ENTRY}, length=2**62),
        "header length, 4611686018427387904 bytes, is more than the format's limit",
    ),
    "header length past the end": (
        safetensors_bytes({"w": GOOD_ENTRY}, length=10_000),
        "header length, 10000 bytes, is more than what the file holds: 69 bytes",
    ),
    "too short": (b"\x01\x02", "too short"),
}
"""Name -> (file bytes, what the refusal must say)."""


def write_malformed(path: Path, kind: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(MALFORMED[kind][0])
    return path
