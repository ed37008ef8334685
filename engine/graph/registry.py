"""Which node classes exist: the built-in ones and the packages found in `custom_nodes/`.

A custom package is a `.py` file or a folder with `__init__.py` exporting `NODE_CLASS_MAPPINGS`
(and optionally `NODE_DISPLAY_NAME_MAPPINGS` and `WEB_DIRECTORY`), as in ComfyUI, and/or a V3
`async def comfy_entrypoint()` whose extension lists `comfy_api.latest.io.ComfyNode` classes
(engine.graph.v3 turns those into V1 classes, so one executor runs both). A package that
fails to import is reported and skipped: one broken package must not stop the server starting.
Built-in names are never overridden by a package.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from engine.graph import v3
from engine.graph.node_def import NodeDefinition, define

log = logging.getLogger(__name__)

CUSTOM_NODES_MODULE = "custom_nodes"


@dataclass(frozen=True)
class RegisteredNode:
    cls: type
    display_name: str
    python_module: str


@dataclass
class PackageReport:
    """What happened when one custom node package was loaded."""

    name: str
    path: Path
    nodes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Names the package declared that were already taken."""
    web_directory: Path | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


class NodeRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, RegisteredNode] = {}
        self.web_directories: dict[str, Path] = {}
        """Package name -> folder of front-end extension files served at /extensions/<name>/."""

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._nodes

    def __iter__(self) -> Iterator[str]:
        return iter(self._nodes)

    def __len__(self) -> int:
        return len(self._nodes)

    def register(
        self,
        mappings: Mapping[str, type],
        display_names: Mapping[str, str] | None = None,
        python_module: str = "nodes",
    ) -> tuple[list[str], list[str]]:
        """Add node classes; returns (added, skipped because the name was taken)."""
        added, skipped = [], []
        for class_type, cls in mappings.items():
            if class_type in self._nodes:
                skipped.append(class_type)
                continue
            display = (
                (display_names or {}).get(class_type) or getattr(cls, "DISPLAY_NAME", None) or class_type
            )
            self._nodes[class_type] = RegisteredNode(cls, str(display), python_module)
            added.append(class_type)
        return added, skipped

    def definition(self, class_type: str) -> NodeDefinition:
        """A fresh definition (INPUT_TYPES is called again: file lists may have changed)."""
        node = self._nodes[class_type]
        return define(class_type, node.cls, node.display_name, node.python_module)

    def node_class(self, class_type: str) -> type:
        return self._nodes[class_type].cls

    def load_custom_nodes(self, directory: Path) -> list[PackageReport]:
        """Import every package in `directory`, in name order; failures are reported, not raised."""
        if not directory.is_dir():
            return []
        v3.install_comfy_api()
        reports = []
        for path in sorted(directory.iterdir()):
            if path.name.startswith((".", "__")) or path.name.endswith(".disabled"):
                continue
            if path.is_file() and path.suffix == ".py":
                reports.append(self._load_package(path.stem, path, path))
            elif path.is_dir() and (path / "__init__.py").is_file():
                reports.append(self._load_package(path.name, path / "__init__.py", path))
        return reports

    def _load_package(self, name: str, entry: Path, path: Path) -> PackageReport:
        report = PackageReport(name=name, path=path)
        started = time.perf_counter()
        module_name = f"{CUSTOM_NODES_MODULE}.{name}"
        try:
            module = _import_file(module_name, entry, is_package=entry.name == "__init__.py")
            declared = getattr(module, "NODE_CLASS_MAPPINGS", None)
            entrypoint = getattr(module, "comfy_entrypoint", None)
            if not isinstance(declared, Mapping) and entrypoint is None:
                raise ImportError("it defines no NODE_CLASS_MAPPINGS and no comfy_entrypoint")
            mappings = v3.adapt(
                {**(declared or {}), **(v3.entrypoint_nodes(entrypoint) if entrypoint is not None else {})}
            )
            for class_type, cls in mappings.items():
                define(class_type, cls)  # reject a malformed class before it is registered
            report.nodes, report.skipped = self.register(
                mappings, getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None), module_name
            )
            web = getattr(module, "WEB_DIRECTORY", None)
            if web:
                web_dir = (path if path.is_dir() else path.parent) / web
                if web_dir.is_dir():
                    report.web_directory = web_dir.resolve()
                    self.web_directories[name] = report.web_directory
        except Exception:
            sys.modules.pop(module_name, None)
            report.error = traceback.format_exc()
            log.error("custom node package %s failed to load and was skipped:\n%s", name, report.error)
        report.seconds = time.perf_counter() - started
        return report


def _import_file(module_name: str, entry: Path, is_package: bool) -> ModuleType:
    if CUSTOM_NODES_MODULE not in sys.modules:
        namespace = ModuleType(CUSTOM_NODES_MODULE)
        namespace.__path__ = []
        sys.modules[CUSTOM_NODES_MODULE] = namespace
    spec = importlib.util.spec_from_file_location(
        module_name, entry, submodule_search_locations=[str(entry.parent)] if is_package else None
    )
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {entry}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
