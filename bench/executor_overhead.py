"""Executor overhead per node on a chain of cheap nodes, cold and fully cached.

    .venv/bin/python bench/executor_overhead.py [--nodes 1000] [--repeats 20]

Target (issue 2): under 50 µs per node on the CI-sized machine (2 cores), both cold and cached.
Validation is timed on its own line. "Cold" is a fresh executor and cache, so every node runs;
"fully cached" re-runs the same prompt, whose output node is then found in the cache (every node's
signature is still computed, since that is how the hit is found).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from engine.graph.execute import Executor
from engine.graph.validate import validate_prompt
from engine.nodes import create_registry


class Increment:
    CATEGORY = "bench"
    FUNCTION = "run"
    RETURN_TYPES = ("INT",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("INT", {"default": 0, "min": 0, "max": 1 << 40})}}

    def run(self, value: int) -> tuple[int]:
        return (value + 1,)


def chain(length: int) -> dict[str, Any]:
    prompt: dict[str, Any] = {"0": {"class_type": "Increment", "inputs": {"value": 0}}}
    for i in range(1, length):
        prompt[str(i)] = {"class_type": "Increment", "inputs": {"value": [str(i - 1), 0]}}
    prompt["out"] = {"class_type": "PreviewAny", "inputs": {"source": [str(length - 1), 0]}}
    return prompt


def per_node_us(fn: Callable[[], Any], nodes: int, repeats: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) / nodes * 1e6)
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    registry, _ = create_registry()
    registry.register({"Increment": Increment})
    prompt = chain(args.nodes)
    nodes = args.nodes + 1
    validated = validate_prompt(registry, prompt).validated
    assert validated is not None

    def cold() -> None:
        result = Executor(registry).run(validated, prompt_id="bench")
        assert result.outputs["out"] == {"text": [str(args.nodes)]}

    warm_executor = Executor(registry)
    warm_executor.run(validated, prompt_id="warm-up")

    def cached() -> None:
        result = warm_executor.run(validated, prompt_id="bench")
        assert result.cached == ["out"]

    rows = [
        ("validate", per_node_us(lambda: validate_prompt(registry, prompt), nodes, args.repeats)),
        ("execute, cold", per_node_us(cold, nodes, args.repeats)),
        ("execute, fully cached", per_node_us(cached, nodes, args.repeats)),
    ]
    print(f"chain of {args.nodes} Increment nodes + PreviewAny, {args.repeats} repeats")
    for label, (median, best) in rows:
        print(f"  {label:<22} median {median:6.1f} µs/node   best {best:6.1f} µs/node")


if __name__ == "__main__":
    main()
