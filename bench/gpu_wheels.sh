#!/usr/bin/env bash
# Run HERE (not on the device), from the repository root, before the device call: downloads the wheels
# of the project's dependencies that the device image lacks (it reaches no registry) into .whl/, which
# .gitignore keeps out of git and the device tool carries when told to (carry: [".whl"]).
# The device image (KINDS.md) has torch, transformers, safetensors, aiohttp, sentencepiece, scipy, ...;
# the engine's service and the baseline also import diffusers, torchsde (+ trampoline) and blake3.
# The comfyui-* packages and swagger-ui-py serve the editor and docs only: the benchmark never imports them.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .gitignore || echo '/.whl/' >> .git/info/exclude
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  diffusers==0.42.1 torchsde==0.2.6 trampoline==0.1.2 blake3==1.0.11
ls -l .whl
