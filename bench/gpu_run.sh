#!/usr/bin/env bash
# The whole GPU benchmark in ONE device call of at most 10 minutes (an H200: 139 GiB GPU, 128 GiB RAM,
# 64 GiB disk, no network). Prepare here first:   bash bench/gpu_wheels.sh
# then call the device tool with:
#   command:   bash bench/gpu_run.sh
#   carry:     [".whl"]
#   timeout_s: 600
# What comes back under $OUT: bench-full.json, bench-full.md, bench.log, machine.txt.
#
# Budget (estimated, nothing measured yet): set-up 20 s (wheels, imports); per endpoint, weights written
# then loaded by each side, a warm-up and 3 timed requests each, one profiled run each:
#   flux-schnell ~115 s (34 GB written: T5-XXL, CLIP-L, AE, transformer; 8 concurrent requests, twice:
#                 the worker overlapping jobs, and one job at a time),
#   flux-dev     ~150 s (24 GB written; 28-step requests at ~5 s eager),
#   aura-flow    ~110 s (16 GB written; 25 steps x 2 forwards),
#   flux-dev-fp8  ~60 s (engine only, on flux-dev's files; skipped if the time budget is spent),
#   flux-dev-offload ~70 s (engine only, flux-dev's files; T5-XXL and CLIP-L, ~10 GB, moved to host
#                 memory after each encode and back for the next: ~1 s more per request),
#   flux-dev-sequential ~220 s (engine only, one timed request: each of the 28 forwards copies the
#                 ~24 GB of blocks to the GPU and back, ~2.5 s at ~20 GB/s each way, so ~70 s an
#                 image, for the untimed request, the timed one and the profiled one).
# The two modes are reported against flux-dev's row (latency and per-step ratios, peak memory saved).
# About 450 s before the modes, so they run only when the endpoints before them finish sooner than
# estimated. No endpoint starts after 400 s (--time-budget in bench/gpu.py) and the Python run is
# stopped at 560 s, so $OUT always comes back; the JSON is rewritten after each endpoint (a mode cut
# off by the stop is missing from it, not half-reported).
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/bench-out}"
mkdir -p "$OUT"
started=$(date +%s)
say() { echo "[$(($(date +%s) - started)) s] $*" | tee -a "$OUT/bench.log"; }

say "set-up: wheels the device image lacks (diffusers, torchsde, trampoline, blake3)"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { say "the wheels did not install: run bench/gpu_wheels.sh here and carry .whl"; exit 1; }
# The project itself runs from this checkout (its graphs/ and any data files beside the code are read
# from here), with the carried wheels ahead of it on the path.
export PYTHONPATH="/tmp/site:$PWD"

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm --format=csv
  python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
  free -g
  df -h /dev/shm /tmp
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

# The weights go where there is room for 50 GB (flux-dev's, kept for the fp8 run, beside AuraFlow's), in
# RAM if possible (writing and reading back are then memory copies, and the 64 GiB disk also holds the
# image): /dev/shm when it has the room, else a tmpfs mounted for the run (the machine is ours and goes
# back bare), else /tmp on the disk.
free_gb() { df -BG --output=avail "$1" 2>/dev/null | tail -1 | tr -dc '0-9'; }
cache=/tmp/bench-weights
if [ "$(free_gb /dev/shm)" -ge 56 ] 2>/dev/null; then
  cache=/dev/shm/bench-weights
elif mkdir -p /mnt/bench-ram && mount -t tmpfs -o size=72G tmpfs /mnt/bench-ram; then
  cache=/mnt/bench-ram/weights
fi
df -h "$(dirname "$cache")" >> "$OUT/machine.txt" 2>&1
say "weights in $cache; running the benchmark"

timeout --signal=INT --kill-after=20 560 python3 bench/gpu.py --cache-dir "$cache" --out "$OUT" \
  2>&1 | tee -a "$OUT/bench.log"
status=${PIPESTATUS[0]}
rm -rf "$cache"
say "done (exit $status)"
cat "$OUT/bench-full.md" 2>/dev/null
exit "$status"
