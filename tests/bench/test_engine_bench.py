"""`engine bench --size small`: the whole benchmark on the CPU, as CI runs it.

It runs in a subprocess, as a user runs it: the command sets torch's thread count for the process,
which must not leak into other tests. The JSON it writes is checked against the fields the report
promises (below, written out here rather than taken from the code), and the engine's image against
diffusers' on the same tiny weights: with the same noise, conditioning and sigmas the two pipelines are
one computation in float32, so the 8-bit images may differ by one level where a value sits on a level
boundary, in a handful of values at most.

The same run takes flux-dev through its two memory modes (engine only, one timed request, no
concurrent requests: a few seconds). The README's Performance table calls both exact, so each mode's
image of the comparison request is checked pixel for pixel against flux-dev's default image, read from
the PNGs the bench copies out. On the CPU sequential offload does stream the blocks (its log says so),
while offloading text encoders changes nothing (the model manager does it from a GPU only): here that
mode shows that the bench runs and reports it, not what it costs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
ENDPOINTS = ["flux-schnell", "flux-dev", "aura-flow"]
MODES = {
    "flux-dev-offload": {"offload_text_encoders": "always"},
    "flux-dev-sequential": {"sequential_offload": True},
}
"""flux-dev's memory modes and the settings each changes (README: `--offload-text-encoders always`,
`--sequential-offload`)."""
STEPS = {"aura-flow": 25, "flux-schnell": 4, "flux-dev": 28}
ONE_LEVEL = 1 / 255
MOST_DIFFERING = 0.01
"""Of the image's values, the share that may sit one level apart (float32 rounding at a boundary)."""

REPORT_FIELDS = {
    "size",
    "device",
    "dtype",
    "versions",
    "weights_dir",
    "weights",
    "endpoints",
    "total_s",
    "notes",
}
WEIGHTS_FIELDS = {"relative_path", "nbytes", "seconds", "reused"}
ENDPOINT_FIELDS = {
    "endpoint",
    "width",
    "height",
    "steps",
    "cfg",
    "work",
    "mode",
    "against_default",
    "engine",
    "diffusers",
    "speedup",
    "comparison",
    "errors",
}
WORK_FIELDS = {
    "image_tokens",
    "text_tokens",
    "transformer_tflop_per_forward",
    "forwards",
    "transformer_tflop",
    "text_encoders_tflop",
    "vae_decode_tflop",
    "transformer_bound_s",
}
SYSTEM_FIELDS = {
    "system",
    "load_s",
    "startup_s",
    "latency",
    "per_step_s",
    "stages_s",
    "transformer_tflops",
    "image_tflops",
    "bound_fraction",
    "peak_memory_bytes",
    "peak_memory_kind",
    "throughput",
    "notes",
}
THROUGHPUT_FIELDS = {
    "requests",
    "concurrent",
    "wall_s",
    "images_per_s",
    "mean_latency_s",
    "gpu_busy_percent",
    "overlapped",
    "other_mode",
}
COMPARISON_FIELDS = {"what", "max_abs_diff", "mean_abs_diff", "tolerance_max", "tolerance_mean", "equal"}
MODE_COST_FIELDS = {
    "default",
    "latency_ratio",
    "per_step_ratio",
    "peak_memory_saved_bytes",
    "load_ratio",
    "image_max_abs_diff",
    "image_mean_abs_diff",
}


@pytest.fixture(scope="module")
def bench_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path, float, float]:
    root = tmp_path_factory.mktemp("bench")
    command = [
        sys.executable,
        "-m",
        "engine",
        "bench",
        "--size",
        "small",
        "--cache-dir",
        str(root / "cache"),
        "--out",
        str(root / "out"),
        "--graphs-dir",
        str(REPO / "graphs"),
        "--runs",
        "1",
        "--concurrent",
        "3",
        "--endpoints",
        *ENDPOINTS,
        *MODES,
        "--throughput-endpoints",  # the modes report their timed request's rate: no concurrent ones
        *ENDPOINTS,
    ]
    started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # the CPU path, on a GPU machine too
    done = subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
    return done, root, time.perf_counter() - started, cpu_seconds


@pytest.mark.slow
def test_small_bench_runs_every_endpoint_beside_diffusers(
    bench_run: tuple[subprocess.CompletedProcess[str], Path, float, float], report: Any
) -> None:
    done, root, seconds, cpu_seconds = bench_run
    assert done.returncode == 0, done.stderr[-4000:]
    # wall time depends on what else the machine runs; the CPU time is what the run itself costs
    report(f"engine bench --size small: {seconds:.1f} s end to end, {cpu_seconds:.1f} s of CPU")
    data = json.loads((root / "out" / "bench-small.json").read_text())
    assert set(data) == REPORT_FIELDS
    assert data["size"] == "small" and data["dtype"] == "float32"
    assert [endpoint["endpoint"] for endpoint in data["endpoints"]] == ENDPOINTS + list(MODES)
    assert {entry["relative_path"] for entry in data["weights"]} == {
        "diffusion_models/flux1-schnell.safetensors",
        "diffusion_models/flux1-dev.safetensors",
        "vae/ae.safetensors",
        "text_encoders/clip_l.safetensors",
        "text_encoders/t5xxl_fp16.safetensors",
        "checkpoints/aura_flow_0.3.safetensors",
    }
    assert all(set(entry) == WEIGHTS_FIELDS and entry["nbytes"] > 0 for entry in data["weights"])
    for endpoint in data["endpoints"][: len(ENDPOINTS)]:
        name = endpoint["endpoint"]
        assert set(endpoint) == ENDPOINT_FIELDS, name
        assert endpoint["errors"] == [], name
        assert endpoint["mode"] == {} and endpoint["against_default"] is None, name
        assert (endpoint["width"], endpoint["height"], endpoint["steps"]) == (64, 64, STEPS[name])
        assert set(endpoint["work"]) == WORK_FIELDS
        assert endpoint["work"]["forwards"] == STEPS[name] * (2 if name == "aura-flow" else 1)
        for system in ("engine", "diffusers"):
            result = endpoint[system]
            assert set(result) == SYSTEM_FIELDS, (name, system)
            assert result["system"] == system
            assert set(result["throughput"]) == THROUGHPUT_FIELDS
            assert result["latency"]["median_s"] > 0 and len(result["latency"]["runs_s"]) == 1
            # a per-step time is the median gap between steps, well under one image's latency
            assert 0 < result["per_step_s"] < result["latency"]["median_s"]
            assert result["load_s"] > 0 and result["peak_memory_bytes"] > 0
            assert result["peak_memory_kind"] == "process_peak_rss"
            assert result["transformer_tflops"] > 0 and result["image_tflops"] > 0
            assert result["throughput"]["images_per_s"] > 0
            assert result["throughput"]["gpu_busy_percent"] is None  # no GPU here
        served = endpoint["engine"]["throughput"]
        assert served["requests"] == 3 and served["concurrent"] is True
        assert served["overlapped"] is False  # the CPU's default: one job at a time
        # the same requests again with the worker overlapping jobs, for what that buys on a GPU
        other = served["other_mode"]
        assert set(other) == THROUGHPUT_FIELDS and other["other_mode"] is None
        assert (other["requests"], other["concurrent"], other["overlapped"]) == (3, True, True)
        assert other["images_per_s"] > 0
        assert endpoint["diffusers"]["throughput"]["overlapped"] is None
        assert endpoint["speedup"] == pytest.approx(
            endpoint["diffusers"]["latency"]["median_s"] / endpoint["engine"]["latency"]["median_s"]
        )


@pytest.mark.slow
def test_the_engine_makes_diffusers_image_on_the_same_tiny_weights(
    bench_run: tuple[subprocess.CompletedProcess[str], Path, float, float],
) -> None:
    done, root, *_ = bench_run
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads((root / "out" / "bench-small.json").read_text())
    for endpoint in data["endpoints"][: len(ENDPOINTS)]:
        comparison = endpoint["comparison"]
        assert set(comparison) == COMPARISON_FIELDS
        assert comparison["max_abs_diff"] <= ONE_LEVEL + 1e-12, endpoint["endpoint"]
        assert comparison["mean_abs_diff"] <= MOST_DIFFERING * ONE_LEVEL, endpoint["endpoint"]
        assert comparison["equal"] is True


@pytest.mark.slow
def test_the_table_is_printed_and_written(
    bench_run: tuple[subprocess.CompletedProcess[str], Path, float, float],
) -> None:
    done, root, *_ = bench_run
    table = (root / "out" / "bench-small.md").read_text()
    assert table in done.stdout
    rows = [line for line in table.splitlines() if line.startswith("| flux") or line.startswith("| aura")]
    systems = [(row.split("|")[1].strip(), row.split("|")[2].strip()) for row in rows]
    expected = [(name, system) for name in ENDPOINTS for system in ("engine", "diffusers")]
    assert systems[: len(expected)] == expected


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png.convert("RGB"))


@pytest.mark.slow
def test_memory_modes_make_flux_devs_image_and_report_what_they_cost(
    bench_run: tuple[subprocess.CompletedProcess[str], Path, float, float],
) -> None:
    done, root, *_ = bench_run
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads((root / "out" / "bench-small.json").read_text())
    rows = {endpoint["endpoint"]: endpoint for endpoint in data["endpoints"]}
    default = rows["flux-dev"]["engine"]
    assert re.search(r"streaming \w+ from host memory, \d+ blocks one at a time", done.stderr)
    images = root / "out" / "bench-small-images"
    reference = _pixels(images / "flux-dev.png")
    assert reference.shape == (64, 64, 3) and reference.std() > 0  # an image, not a blank
    for name, settings in MODES.items():
        row = rows[name]
        assert set(row) == ENDPOINT_FIELDS and row["errors"] == [], name
        assert row["mode"] == settings
        assert (row["width"], row["height"], row["steps"]) == (64, 64, 28)
        assert row["diffusers"] is None and row["comparison"] is None  # engine only
        # exact, as the README claims: the same request makes the default run's pixels
        assert np.array_equal(_pixels(images / f"{name}.png"), reference), name
        engine = row["engine"]
        assert set(engine) == SYSTEM_FIELDS
        latency = engine["latency"]["median_s"]
        assert latency > 0 and len(engine["latency"]["runs_s"]) == 1
        assert 0 < engine["per_step_s"] < latency
        assert engine["peak_memory_bytes"] > 0 and engine["peak_memory_kind"] == "process_peak_rss"
        assert engine["load_s"] > 0
        assert engine["throughput"]["concurrent"] is False and engine["throughput"]["requests"] == 1
        cost = row["against_default"]
        assert set(cost) == MODE_COST_FIELDS
        assert cost["default"] == "flux-dev"
        assert cost["image_max_abs_diff"] == 0.0 and cost["image_mean_abs_diff"] == 0.0
        assert cost["latency_ratio"] == pytest.approx(latency / default["latency"]["median_s"])
        assert cost["per_step_ratio"] == pytest.approx(engine["per_step_s"] / default["per_step_s"])
        assert cost["load_ratio"] == pytest.approx(engine["load_s"] / default["load_s"])
        saved = default["peak_memory_bytes"] - engine["peak_memory_bytes"]
        assert cost["peak_memory_saved_bytes"] == saved

    table = (root / "out" / "bench-small.md").read_text().splitlines()
    header = table.index(
        "| mode | changes | latency (median) | per step | peak memory | load | image vs default |"
    )
    section = itertools.takewhile(lambda line: line.startswith("|"), table[header + 2 :])
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:-1]] for row in section}
    assert list(cells) == list(MODES)
    for name, settings in MODES.items():
        changes, latency_cell, _, memory_cell, _, image_cell = cells[name]
        assert changes == ", ".join(f"{key}={value}" for key, value in settings.items())
        assert latency_cell.endswith(f"({rows[name]['against_default']['latency_ratio']:.2f}x)")
        saved_gib = rows[name]["against_default"]["peak_memory_saved_bytes"] / 2**30
        assert memory_cell.endswith(f"{abs(saved_gib):.2f} GiB {'less' if saved_gib >= 0 else 'more'})")
        assert image_cell == "identical"
