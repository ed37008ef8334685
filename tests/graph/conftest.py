from __future__ import annotations

import pytest

from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.nodes import create_registry
from tests.graph import nodes


@pytest.fixture
def registry() -> NodeRegistry:
    registry, _ = create_registry()
    registry.register(nodes.NODE_CLASS_MAPPINGS, python_module="tests.graph.nodes")
    return registry


@pytest.fixture
def executor(registry: NodeRegistry) -> Executor:
    return Executor(registry)


@pytest.fixture(autouse=True)
def _fresh_counters():
    nodes.calls.clear()
    nodes.volatile_token["value"] = 0
    nodes.slow_started.clear()
    nodes.Slow.release.clear()
    yield
    nodes.Slow.release.set()
