"""The executor's ComfyUI semantics: laziness, caching, lists, expansion, interrupt, errors, events."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.graph.cache import OutputCache
from engine.graph.events import (
    Event,
    ExecutionFailed,
    ExecutionInterrupted,
    ExecutionStarted,
    ExecutionSucceeded,
    NodeFinished,
    NodeProgress,
    NodesCached,
    NodeStarted,
)
from engine.graph.execute import Executor, RunResult
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from tests.graph import nodes


def run(
    executor: Executor, prompt: dict[str, Any], events: list[Event] | None = None, **kwargs: Any
) -> RunResult:
    result = validate_prompt(executor.registry, prompt)
    assert result.validated is not None, result.node_errors_json()
    sink = events.append if events is not None else (lambda _: None)
    return executor.run(result.validated, prompt_id="p", on_event=sink, **kwargs)


def const(value: int) -> dict[str, Any]:
    return {"class_type": "Const", "inputs": {"value": value}}


def echo(source: str) -> dict[str, Any]:
    return {"class_type": "Echo", "inputs": {"value": [source, 0]}}


def test_runs_upstream_first_and_returns_outputs(executor: Executor) -> None:
    prompt = {
        "1": const(2),
        "2": const(3),
        "3": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": ["2", 0]}},
        "4": echo("3"),
    }
    result = run(executor, prompt)
    assert result.status == "success"
    assert result.outputs == {"4": {"value": [5]}}
    assert result.executed.index("3") > max(result.executed.index("1"), result.executed.index("2"))


def test_nodes_not_needed_by_an_output_do_not_run(executor: Executor) -> None:
    prompt = {"1": const(1), "2": {"class_type": "Add", "inputs": {"a": 1, "b": 1}}, "3": echo("1")}
    result = run(executor, prompt)
    assert "2" not in result.executed and nodes.calls["Add"] == 0


def test_lazy_input_not_requested_is_never_evaluated(executor: Executor) -> None:
    prompt = {
        "bad": {"class_type": "Fail", "inputs": {"value": 1}},
        "good": const(7),
        "switch": {
            "class_type": "Switch",
            "inputs": {"choose_first": False, "first": ["bad", 0], "second": ["good", 0]},
        },
        "out": echo("switch"),
    }
    result = run(executor, prompt)
    assert result.status == "success"
    assert result.outputs["out"] == {"value": [7]}
    assert "bad" not in result.executed


def test_lazy_input_requested_is_evaluated(executor: Executor) -> None:
    prompt = {
        "bad": {"class_type": "Fail", "inputs": {"value": 1}},
        "good": const(7),
        "switch": {
            "class_type": "Switch",
            "inputs": {"choose_first": True, "first": ["good", 0], "second": ["bad", 0]},
        },
        "out": echo("switch"),
    }
    assert run(executor, prompt).outputs["out"] == {"value": [7]}


def test_cache_hit_skips_work_and_still_delivers_outputs(executor: Executor) -> None:
    prompt = {"1": const(1), "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 2}}, "3": echo("2")}
    first = run(executor, prompt)
    events: list[Event] = []
    second = run(executor, prompt, events)
    assert nodes.calls["Add"] == 1 and nodes.calls["Echo"] == 1
    assert second.executed == [] and second.cached == ["3"]
    assert second.outputs == first.outputs == {"3": {"value": [3]}}
    kinds = [type(e) for e in events]
    assert kinds == [ExecutionStarted, NodesCached, NodeFinished, ExecutionSucceeded]
    finished = events[2]
    assert isinstance(finished, NodeFinished) and finished.cached and finished.output == {"value": [3]}


def test_changed_input_reruns_only_what_depends_on_it(executor: Executor) -> None:
    prompt = {"1": const(1), "2": {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 2}}, "3": echo("2")}
    run(executor, prompt)
    prompt["2"]["inputs"]["b"] = 5
    result = run(executor, prompt)
    assert result.outputs["3"] == {"value": [6]}
    assert result.executed == ["2", "3"] and "1" in result.cached
    assert nodes.calls["Const"] == 1


def test_is_changed_controls_reuse(executor: Executor) -> None:
    prompt = {"1": {"class_type": "Volatile", "inputs": {"value": 1}}, "2": echo("1")}
    run(executor, prompt)
    run(executor, prompt)
    assert nodes.calls["Volatile"] == 1
    nodes.volatile_token["value"] = 10
    assert run(executor, prompt).outputs["2"] == {"value": [11]}
    assert nodes.calls["Volatile"] == 2


def test_is_changed_nan_always_reruns(executor: Executor) -> None:
    prompt = {"1": {"class_type": "AlwaysChanged", "inputs": {"value": 1}}, "2": echo("1")}
    run(executor, prompt)
    run(executor, prompt)
    assert nodes.calls["AlwaysChanged"] == 2


def test_not_idempotent_nodes_are_cached_per_node_id(executor: Executor) -> None:
    prompt = {
        "a": {"class_type": "Counter", "inputs": {"value": 1}},
        "b": {"class_type": "Counter", "inputs": {"value": 1}},
        "ea": echo("a"),
        "eb": echo("b"),
    }
    result = run(executor, prompt)
    assert nodes.calls["Counter"] == 2  # identical inputs, yet each node runs
    assert result.outputs["ea"] != result.outputs["eb"]
    run(executor, prompt)
    assert nodes.calls["Counter"] == 2  # and each is reused on the next run


def test_identical_idempotent_nodes_share_one_execution(executor: Executor) -> None:
    prompt = {"a": const(4), "b": const(4), "ea": echo("a"), "eb": echo("b")}
    run(executor, prompt)
    assert nodes.calls["Const"] == 1


def test_list_outputs_fan_out_and_shorter_lists_repeat_their_last_item(executor: Executor) -> None:
    prompt = {
        "r": {"class_type": "Range", "inputs": {"count": 3}},
        "c": {"class_type": "Range", "inputs": {"count": 2}},
        "add": {"class_type": "Add", "inputs": {"a": ["r", 0], "b": ["c", 0]}},
        "out": echo("add"),
    }
    result = run(executor, prompt)
    assert result.outputs["out"] == {"value": [0, 2, 3]}  # 0+0, 1+1, 2+1
    assert nodes.calls["Add"] == 3


def test_input_is_list_receives_the_whole_list(executor: Executor) -> None:
    prompt = {
        "r": {"class_type": "Range", "inputs": {"count": 5}},
        "s": {"class_type": "Sum", "inputs": {"values": ["r", 0]}},
        "out": echo("s"),
    }
    assert run(executor, prompt).outputs["out"] == {"value": [10]}


def test_empty_list_calls_nothing_downstream(executor: Executor) -> None:
    prompt = {
        "r": {"class_type": "Range", "inputs": {"count": 0}},
        "add": {"class_type": "Add", "inputs": {"a": ["r", 0], "b": 1}},
        "out": echo("add"),
    }
    result = run(executor, prompt)
    assert result.status == "success" and nodes.calls["Add"] == 0


def test_node_expansion_runs_the_returned_graph(executor: Executor) -> None:
    events: list[Event] = []
    prompt = {"1": const(21), "2": {"class_type": "Double", "inputs": {"x": ["1", 0]}}, "3": echo("2")}
    result = run(executor, prompt, events)
    assert result.outputs["3"] == {"value": [42]}
    expanded = [e for e in events if isinstance(e, NodeStarted) and e.class_type == "Add"]
    assert len(expanded) == 1 and expanded[0].display_node == "2" and expanded[0].node_id.startswith("2.")
    shown = [e for e in events if isinstance(e, NodeFinished) and e.node_id.startswith("2.") and e.output]
    assert shown and shown[0].output == {"value": [42]}  # the expansion's own output node ran too
    assert run(executor, prompt).cached == ["3"]


def test_interrupt_stops_the_run_at_the_next_check(executor: Executor) -> None:
    flag = threading.Event()
    prompt = {"1": {"class_type": "Slow", "inputs": {"steps": 5}}, "2": echo("1")}
    validated = validate_prompt(executor.registry, prompt).validated
    assert validated is not None
    events: list[Event] = []
    box: dict[str, RunResult] = {}
    worker = threading.Thread(
        target=lambda: box.setdefault(
            "r", executor.run(validated, prompt_id="p", on_event=events.append, interrupt=flag)
        )
    )
    worker.start()
    assert nodes.slow_started.wait(5)
    flag.set()
    nodes.Slow.release.set()
    worker.join(5)
    result = box["r"]
    assert result.status == "interrupted"
    assert isinstance(result.failure, ExecutionInterrupted) and result.failure.node_id == "1"
    assert "2" not in result.executed
    assert isinstance(events[-1], ExecutionInterrupted)


def test_progress_events_come_from_inside_the_node(executor: Executor) -> None:
    nodes.Slow.release.set()
    events: list[Event] = []
    run(executor, {"1": {"class_type": "Slow", "inputs": {"steps": 3}}, "2": echo("1")}, events)
    progress = [(e.node_id, e.value, e.total) for e in events if isinstance(e, NodeProgress)]
    assert progress == [("1", 1, 3), ("1", 2, 3), ("1", 3, 3)]


def test_failure_names_node_type_and_carries_traceback(executor: Executor) -> None:
    prompt = {"1": const(3), "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}}, "3": echo("2")}
    events: list[Event] = []
    result = run(executor, prompt, events)
    assert result.status == "error"
    failure = result.failure
    assert isinstance(failure, ExecutionFailed)
    assert (failure.node_id, failure.node_type) == ("2", "Fail")
    assert (failure.exception_type, failure.exception_message) == ("ValueError", "boom 3")
    assert any("raise ValueError" in line for line in failure.traceback)
    assert failure.current_inputs == {"value": "[3]"} and failure.executed == ["1"]
    assert events[-1] is failure


def test_a_failed_run_caches_what_succeeded(executor: Executor) -> None:
    prompt = {"1": const(3), "2": {"class_type": "Fail", "inputs": {"value": ["1", 0]}}, "3": echo("2")}
    run(executor, prompt)
    prompt["2"] = {"class_type": "Add", "inputs": {"a": ["1", 0], "b": 1}}
    assert run(executor, prompt).outputs["3"] == {"value": [4]}
    assert nodes.calls["Const"] == 1


def test_hidden_inputs_are_supplied(executor: Executor) -> None:
    prompt = {
        "7": {
            "class_type": "Typed",
            "inputs": {"count": 2, "strength": 0.1, "label": "l", "enabled": 1, "mode": "slow"},
        }
    }
    result = run(executor, prompt)
    assert result.outputs["7"] == {"seen": [[2, 0.1, "l", True, "slow", "7"]]}


def test_node_instances_are_reused_between_runs(registry: NodeRegistry) -> None:
    executor = Executor(registry, OutputCache(max_bytes=0))  # nothing cached: every run executes
    prompt = {"1": const(1), "2": echo("1")}
    run(executor, prompt)
    first = executor.instance("1", registry.definition("Const"))
    run(executor, prompt)
    assert executor.instance("1", registry.definition("Const")) is first
    assert nodes.calls["Const"] == 2


def test_cache_stays_within_its_memory_bound(registry: NodeRegistry) -> None:
    cache = OutputCache(max_bytes=2000)
    executor = Executor(registry, cache)
    for value in range(50):
        run(executor, {"1": const(value), "2": echo("1")})
    assert 0 < cache.nbytes <= 2000
    assert len(cache) < 100
    run(executor, {"1": const(0), "2": echo("1")})
    assert nodes.calls["Const"] == 51  # the oldest entries were evicted


def test_long_chain_runs_without_recursion_limits(executor: Executor) -> None:
    prompt: dict[str, Any] = {"0": const(0)}
    for i in range(1, 3000):
        prompt[str(i)] = {"class_type": "Add", "inputs": {"a": [str(i - 1), 0], "b": 1}}
    prompt["out"] = echo("2999")
    assert run(executor, prompt).outputs["out"] == {"value": [2999]}
    assert run(executor, prompt).cached == ["out"]


@pytest.mark.parametrize("bad_result", [5, "text"])
def test_node_returning_a_bad_value_fails_clearly(registry: NodeRegistry, bad_result: Any) -> None:
    class Bad:
        CATEGORY = "test"
        FUNCTION = "run"
        RETURN_TYPES = ("INT",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}}

        def run(self):
            return bad_result

    registry.register({"Bad": Bad})
    result = run(Executor(registry), {"1": {"class_type": "Bad", "inputs": {}}, "2": echo("1")})
    assert isinstance(result.failure, ExecutionFailed)
    assert "expected a tuple" in result.failure.exception_message
