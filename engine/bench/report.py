"""The benchmark's markdown table: one row per endpoint and system, the figures that decide a choice;
then the engine's variants of an endpoint (memory modes, fp8) against its default run."""

from __future__ import annotations

from typing import Any

from engine.bench.results import BenchReport, EndpointResult, ModeCost, SystemResult, Throughput

GIB = 1024**3


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _number(value: float | None, digits: int) -> str:
    """`digits` significant digits (tiny models' rates are thousandths of a TFLOP/s)."""
    return "-" if value is None else f"{value:.{digits}g}"


def _rate(throughput: Throughput) -> str:
    """Images per second, how the requests came, and how busy the GPU was."""
    busy = throughput.gpu_busy_percent
    mode = f"{throughput.requests} {'at once' if throughput.concurrent else 'in turn'}"
    if throughput.overlapped is not None:
        mode += ", overlapped" if throughput.overlapped else ", one job at a time"
    rate = f"{throughput.images_per_s:.2f}/s ({mode}{'' if busy is None else f', GPU {busy:.0f}% busy'})"
    return rate if throughput.other_mode is None else f"{rate}; {_rate(throughput.other_mode)}"


def _row(endpoint: EndpointResult, result: SystemResult, speedup: str) -> str:
    cells = [
        endpoint.endpoint,
        result.system,
        _seconds(result.latency.median_s),
        speedup,
        _seconds(result.per_step_s),
        _number(result.transformer_tflops, 3),
        f"{result.bound_fraction * 100:.2g}%",
        f"{result.peak_memory_bytes / GIB:.2f} GiB",
        _seconds(result.load_s),
        _rate(result.throughput),
    ]
    return "| " + " | ".join(cells) + " |"


def _ratio(value: float | None) -> str:
    return "" if value is None else f" ({value:.2f}x)"


def _changes(mode: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in mode.items())


def _mode_row(endpoint: EndpointResult, result: SystemResult, cost: ModeCost) -> str:
    saved = cost.peak_memory_saved_bytes / GIB
    if cost.image_max_abs_diff is None:
        image = "-"
    elif cost.image_max_abs_diff == 0:
        image = "identical"
    else:
        image = f"max {cost.image_max_abs_diff:.2e}, mean {cost.image_mean_abs_diff:.2e}"
    cells = [
        endpoint.endpoint,
        _changes(endpoint.mode),
        _seconds(result.latency.median_s) + _ratio(cost.latency_ratio),
        _seconds(result.per_step_s) + _ratio(cost.per_step_ratio),
        f"{result.peak_memory_bytes / GIB:.2f} GiB ({abs(saved):.2f} GiB {'less' if saved >= 0 else 'more'})",
        _seconds(result.load_s) + _ratio(cost.load_ratio),
        image,
    ]
    return "| " + " | ".join(cells) + " |"


def _modes(report: BenchReport) -> list[str]:
    rows = [
        _mode_row(endpoint, endpoint.engine, endpoint.against_default)
        for endpoint in report.endpoints
        if endpoint.engine is not None and endpoint.against_default is not None
    ]
    if not rows:
        return []
    return [
        "",
        "Modes against the endpoint's default run (engine; ratios and memory relative to that row):",
        "",
        "| mode | changes | latency (median) | per step | peak memory | load | image vs default |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]


def markdown(report: BenchReport) -> str:
    side = report.endpoints[0].width if report.endpoints else 0
    lines = [
        f"Benchmark, size {report.size} ({side}x{side}), {report.device}, {report.dtype}; "
        f"torch {report.versions.get('torch', '?')}, diffusers {report.versions.get('diffusers', '?')}",
        "",
        "| endpoint | system | latency (median) | speed-up | per step | transformer TFLOP/s | of H200 bound "
        "| peak memory | load | throughput |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for endpoint in report.endpoints:
        speedup = "-" if endpoint.speedup is None else f"{endpoint.speedup:.2f}x"
        for result in (endpoint.engine, endpoint.diffusers):
            if result is not None:
                lines.append(_row(endpoint, result, speedup if result.system == "engine" else ""))
        lines.extend(f"| {endpoint.endpoint} | error | {error} |||||||" for error in endpoint.errors)
    lines += _modes(report)
    comparisons = [e for e in report.endpoints if e.comparison is not None]
    if comparisons:
        lines += [
            "",
            "| endpoint | compared | max abs diff | mean abs diff | tolerance (max / mean) | equal |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for endpoint in comparisons:
            c = endpoint.comparison
            assert c is not None
            lines.append(
                f"| {endpoint.endpoint} | {c.what} | {c.max_abs_diff:.2e} | {c.mean_abs_diff:.2e} "
                f"| {c.tolerance_max:.1e} / {c.tolerance_mean:.1e} | {'yes' if c.equal else 'NO'} |"
            )
    lines += [
        "",
        "Latency: request to written image, one at a time, each request a new prompt and seed. Per step: "
        "median time between sampling steps with the device synchronised at each. Transformer TFLOP/s: "
        "PERF.md's work per step over the per-step time. Of H200 bound: the transformer's least time at "
        "790 TFLOP/s over the latency. Speed-up: diffusers' median latency over the engine's.",
    ]
    written = [w for w in report.weights if not w.reused]
    if written:
        gigabytes = sum(w.nbytes for w in written) / 1e9
        seconds = sum(w.seconds for w in written)
        lines.append(f"Weights: {len(written)} files, {gigabytes:.1f} GB written in {seconds:.1f} s.")
    lines += [f"Note: {note}" for note in report.notes]
    return "\n".join(lines) + "\n"
