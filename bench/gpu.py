"""The GPU benchmark: `engine bench --size full` with the settings one H200 device call needs.

    python bench/gpu.py [--out DIR] [--cache-dir DIR] [any other `engine bench` option]

Full size: the published models' shapes at 1024x1024, random bf16 weights written to the cache folder
(34 GB for one Flux transformer with T5-XXL, CLIP-L and the AE; AuraFlow's checkpoint is 16 GB). Each
endpoint's files are deleted once no later endpoint needs them (`--evict-weights`). Throughput (8
requests at once through the queue) is measured on flux-schnell, which the issue's target is about;
dev and aura report their sequential rate, saving a minute and a half. flux-dev-fp8 (the engine's
opt-in fp8 path, `weight_dtype fp8_e4m3fn_fast`; no diffusers counterpart) comes after them, on flux-dev's
files, which are kept for it (with AuraFlow's: 50 GB at most); then flux-dev's two memory modes
(flux-dev-offload, flux-dev-sequential: one timed request), reported against flux-dev's row. No
endpoint starts after 400 s, so a 10-minute call ends with the JSON written.
bench/gpu_run.sh is the whole device call (set-up, this, files back under $OUT).
"""

from __future__ import annotations

import sys

from engine.cli import main

GPU_DEFAULTS = [
    "--size",
    "full",
    "--endpoints",
    "flux-schnell",
    "flux-dev",
    "aura-flow",
    "flux-dev-fp8",
    "flux-dev-offload",
    "flux-dev-sequential",
    "--evict-weights",
    "--throughput-endpoints",
    "flux-schnell",
    "--time-budget",
    "400",
]


if __name__ == "__main__":
    sys.exit(main(["bench", *GPU_DEFAULTS, *sys.argv[1:]]))
