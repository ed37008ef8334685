"""`engine bench`: the served endpoints beside diffusers' pipelines on the same random weights.

Full size (1024x1024, the published models' shapes) needs a CUDA GPU with room for a 12B model and its
encoders (tens of GB) and disk for the weights; without CUDA it runs the same code with the tiny test
models at 64x64, which is what CI runs. Prints the markdown table and writes it with the JSON (and
the compared images, when there is a comparison run).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine.cli import global_options

log = logging.getLogger("engine.bench")

ENDPOINT_CHOICES = (
    "flux-schnell",
    "flux-dev",
    "aura-flow",
    "flux-dev-fp8",
    "flux-dev-offload",
    "flux-dev-sequential",
)
DEFAULT_ENDPOINTS = ENDPOINT_CHOICES[:3]
"""The variants of flux-dev run only when asked for, on the engine alone (no diffusers counterpart):
flux-dev-fp8 (the opt-in fp8 path), flux-dev-offload (text encoders moved to host memory after
encoding) and flux-dev-sequential (the transformer's blocks streamed from host memory). Listed after
flux-dev, each is reported against its run: latency and per-step ratios, peak memory saved."""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def cmd_bench(args: argparse.Namespace) -> int:
    import torch  # imported here: see engine.cli

    from engine.bench.report import markdown
    from engine.bench.run import BenchOptions, run_bench
    from engine.bench.weights import Size

    size: Size = args.size or ("full" if torch.cuda.is_available() else "small")
    if size == "full" and not torch.cuda.is_available():
        raise SystemExit(
            "engine bench --size full needs a CUDA GPU (12B-parameter models, tens of GB of weights); "
            "without one, --size small runs the same benchmark on the tiny test models"
        )
    base = Path(args.base_dir or ".")
    out = Path(args.out) if args.out else base / "data" / "bench"
    options = BenchOptions(
        size=size,
        cache_dir=Path(args.cache_dir) if args.cache_dir else base / "data" / "bench-weights",
        graphs_dir=Path(args.graphs_dir),
        endpoints=tuple(args.endpoints or DEFAULT_ENDPOINTS),
        runs=args.runs,
        concurrent=args.concurrent,
        throughput_endpoints=tuple(args.throughput_endpoints) if args.throughput_endpoints else None,
        diffusers=not args.no_diffusers,
        compare=args.compare if args.compare is not None else size == "small",
        evict_weights=args.evict_weights,
        threads=args.threads,
        time_budget_s=args.time_budget,
        json_path=out / f"bench-{size}.json",
        markdown_path=out / f"bench-{size}.md",
        images_dir=out / f"bench-{size}-images",
    )
    report = run_bench(options, say=log.info)
    print(markdown(report), end="")
    print(f"written: {options.json_path} and {options.markdown_path}")
    failed = [endpoint.endpoint for endpoint in report.endpoints if endpoint.errors]
    unequal = [e.endpoint for e in report.endpoints if e.comparison is not None and not e.comparison.equal]
    if failed:
        log.error("failed or skipped: %s", ", ".join(failed))
    if unequal:
        log.error("the engine's image differs from diffusers' beyond the tolerance: %s", ", ".join(unequal))
    return 1 if failed or unequal else 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench", help="benchmark the endpoints beside diffusers on random weights of the real shapes"
    )
    bench.add_argument(
        "--size",
        choices=("small", "full"),
        help="full: the published models at 1024x1024 (default with CUDA); small: tiny models at 64x64",
    )
    bench.add_argument(
        "--endpoints",
        nargs="+",
        choices=ENDPOINT_CHOICES,
        help="default: the three served endpoints; the flux-dev variants (fp8, memory modes) when named",
    )
    bench.add_argument("--runs", type=_positive, default=3, help="timed requests per endpoint (default 3)")
    bench.add_argument(
        "--concurrent",
        type=_positive,
        default=8,
        help="requests submitted at once for throughput (default 8)",
    )
    bench.add_argument(
        "--throughput-endpoints",
        nargs="+",
        choices=ENDPOINT_CHOICES,
        help="endpoints given the concurrent requests (default: all; others report their sequential rate)",
    )
    bench.add_argument(
        "--cache-dir", metavar="DIR", help="where weights are written (default BASE/data/bench-weights)"
    )
    bench.add_argument(
        "--out", metavar="DIR", help="where the JSON and markdown go (default BASE/data/bench)"
    )
    bench.add_argument(
        "--graphs-dir", metavar="DIR", default="graphs", help="endpoint templates (default ./graphs)"
    )
    bench.add_argument("--no-diffusers", action="store_true", help="skip the diffusers baseline")
    bench.add_argument(
        "--compare",
        dest="compare",
        action="store_true",
        default=None,
        help="compare the engine's image with diffusers' (default: at the small size only)",
    )
    bench.add_argument("--no-compare", dest="compare", action="store_false")
    bench.add_argument(
        "--evict-weights",
        action="store_true",
        help="delete each endpoint's weight files once no later endpoint needs them (bounded disk)",
    )
    bench.add_argument(
        "--threads",
        type=_positive,
        help="torch CPU threads (default: torch's own, or 1 for the small size without CUDA)",
    )
    bench.add_argument(
        "--time-budget",
        type=float,
        metavar="SECONDS",
        help="start no further endpoint after this many seconds (what finished is still written)",
    )
    global_options.add_to_command(bench, ("verbose", "base_dir"))
    bench.set_defaults(handler=cmd_bench)
