"""`engine run`, `engine validate`, `engine nodes`: graphs from a terminal."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import uuid
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from engine import folders
from engine.cli import global_options
from engine.cli.console import err
from engine.cli.overrides import check_overrides
from engine.graph.events import (
    Event,
    ExecutionFailed,
    ExecutionInterrupted,
    NodeFinished,
    NodeProgress,
    NodesCached,
    NodeStarted,
)
from engine.graph.execute import Executor
from engine.graph.object_info import object_info
from engine.graph.prompt import GraphFileError, apply_overrides, load_graph
from engine.graph.registry import NodeRegistry
from engine.graph.types import Prompt
from engine.graph.validate import ValidationResult, validate_prompt
from engine.graph.workflow import WorkflowError

EXIT_INVALID = 1
EXIT_FAILED = 2
EXIT_INTERRUPTED = 130


def _registry(args: argparse.Namespace) -> NodeRegistry:
    from engine.nodes import create_registry  # torch: imported only by the commands that need it

    registry, reports = create_registry(args.custom_nodes)
    for report in reports:
        if not report.ok:
            last_line = (report.error or "").strip().splitlines()[-1:]
            err.print(
                f"[yellow]custom node package '{report.name}' failed to load and was skipped: {last_line}"
            )
    return registry


def _load(args: argparse.Namespace, registry: NodeRegistry) -> Prompt:
    graph = load_graph(Path(args.graph), registry)
    prompt = apply_overrides(graph, args.set or [])
    check_overrides(graph, prompt, registry)
    return prompt


def _unreadable(exc: Exception) -> dict[str, Any]:
    """A graph that could not even be read, in the shape of a validation failure."""
    extra = {"missing_node_types": exc.missing_node_types} if isinstance(exc, WorkflowError) else {}
    return {
        "error": {"type": "invalid_prompt", "message": str(exc), "details": "", "extra_info": extra},
        "node_errors": {},
    }


def cmd_validate(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        result = validate_prompt(registry, _load(args, registry))
    except (GraphFileError, WorkflowError) as exc:
        print(json.dumps(_unreadable(exc), indent=2))
        return EXIT_INVALID
    if not result.ok:
        print(json.dumps(result.error_body(), indent=2, default=str))
        return EXIT_INVALID
    assert result.validated is not None
    body = {"node_errors": result.node_errors_json(), "outputs": list(result.validated.outputs)}
    print(json.dumps(body, indent=2, default=str))
    return 0


class _Display:
    """Shows which node runs and its step progress, then what each output node produced."""

    def __init__(self, progress: Progress, prompt: Prompt, out: Console) -> None:
        self.progress = progress
        self.prompt = prompt
        self.out = out
        self.task: TaskID | None = None

    def title(self, node_id: str) -> str:
        node = self.prompt.get(node_id)
        return f"{node['class_type']} #{node_id}" if node else f"#{node_id}"

    def __call__(self, event: Event) -> None:
        if isinstance(event, NodesCached) and event.nodes:
            self.progress.console.print(f"[dim]cached: {', '.join(self.title(n) for n in event.nodes)}")
        elif isinstance(event, NodeStarted):
            self.end_task()
            self.task = self.progress.add_task(self.title(event.display_node), total=None)
        elif isinstance(event, NodeProgress) and self.task is not None:
            self.progress.update(self.task, completed=event.value, total=event.total)
        elif isinstance(event, NodeFinished):
            self.end_task()
            if event.output:
                suffix = " (cached)" if event.cached else ""
                self.out.print(f"[bold]{self.title(event.display_node)}{suffix}[/]")
                for key, values in event.output.items():
                    for value in values:
                        self.out.print(f"  {key}: {_describe_output(value)}", highlight=False)

    def end_task(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


class _StepsColumn(ProgressColumn):
    """Steps as "3/20" for a node that reports them; nothing for one that does not (no known total)."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{task.completed:.0f}/{task.total:.0f}")


def _describe_output(value: Any) -> str:
    """A saved file as the full path a user can open; any other output value as it is."""
    if isinstance(value, dict) and "filename" in value:
        directory = folders.get_directory_by_type(value.get("type") or "output")
        relative = Path(value.get("subfolder") or "") / value["filename"]
        return str(directory / relative if directory is not None else relative)
    return str(value)


def cmd_run(args: argparse.Namespace) -> int:
    from engine.diffusion.model_manager import ModelManager  # torch, as for the registry

    registry = _registry(args)
    try:
        prompt = _load(args, registry)
    except (GraphFileError, WorkflowError) as exc:
        err.print(f"[red]{exc}")
        return EXIT_INVALID
    result = validate_prompt(registry, prompt)
    if not result.ok:
        _print_validation_errors(result)
        return EXIT_INVALID
    assert result.validated is not None
    if result.node_errors:
        _print_validation_errors(result)

    interrupt = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupt.set())
    columns = (TextColumn("{task.description}"), BarColumn(), _StepsColumn())
    try:
        with Progress(*columns, TimeElapsedColumn(), console=err, transient=True) as progress:
            run = Executor(registry, resources={"models": ModelManager()}).run(
                result.validated,
                prompt_id=str(uuid.uuid4()),
                on_event=_Display(progress, prompt, Console(soft_wrap=True)),  # paths whole, not wrapped
                interrupt=interrupt,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    if isinstance(run.failure, ExecutionInterrupted):
        err.print("[yellow]interrupted")
        return EXIT_INTERRUPTED
    if isinstance(run.failure, ExecutionFailed):
        failure = run.failure
        err.print(
            f"[red]node {failure.node_id} ({failure.node_type}) failed: {failure.exception_type}: "
            f"{failure.exception_message}"
        )
        if args.verbose:
            err.print("".join(failure.traceback))
        return EXIT_FAILED
    return 0


def _print_validation_errors(result: ValidationResult) -> None:
    if result.error is not None:
        err.print(f"[red]{escape(result.error.message)}", highlight=False)
    empty_choice = False
    for node_id, errors in result.node_errors.items():
        for error in errors.errors:
            line = f"  node {node_id} ({errors.class_type}): {error.message}: {error.details}"
            err.print(f"[red]{escape(line)}", highlight=False)
            empty_choice |= error.type == "value_not_in_list" and error.details.endswith(" not in []")
    if empty_choice:
        _print_model_folders()


def _print_model_folders() -> None:
    """An empty list of choices is, for a loader, a model folder with no files: say where it looked."""
    settings = folders.current()
    extra = sorted(
        {
            str(path)
            for paths in settings.model_paths.values()
            for path in paths
            if not path.is_relative_to(settings.models_dir)
        }
    )
    err.print(
        f"  no files found for an empty list above: model files are looked up in {settings.models_dir}, "
        f"in subfolders named for their kind ({', '.join(sorted(settings.model_paths))})"
        + (f", and in {', '.join(extra)}" if extra else "")
        + "; pass --models-dir or --extra-model-paths to look elsewhere, "
        "or write tiny test models with `engine make-test-models DIR`",
        markup=False,
        highlight=False,
    )


def cmd_nodes(args: argparse.Namespace) -> int:
    registry = _registry(args)
    info = object_info(registry)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    rows = [
        (name, info[name]["display_name"], info[name]["category"], info[name]["python_module"])
        for name in sorted(info)
    ]
    console = Console()
    if not console.is_terminal:
        for row in rows:  # for grep and scripts: one node a line, fields split by tabs, nothing cut
            print("\t".join(row))
        return 0
    table = Table("class_type", "display name", "category", "module")
    table.columns[0].no_wrap = True  # the name a graph needs, so it is never cut or broken
    table.columns[0].min_width = max(len(row[0]) for row in rows)
    for column in table.columns[1:]:
        column.overflow = "fold"
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="run a graph (API prompt or UI workflow) once")
    run.add_argument("graph", help="graph file (.json)")
    run.add_argument("--set", action="append", metavar="NODE_ID.INPUT=VALUE", help="override an input")
    run.add_argument("--out", metavar="DIR", help="folder for saved outputs (default: ./output)")
    run.set_defaults(handler=cmd_run)
    global_options.add_to_command(run, global_options.GRAPHS)

    validate = commands.add_parser("validate", help="check a graph; print ComfyUI-shaped errors as JSON")
    validate.add_argument("graph", help="graph file (.json)")
    validate.add_argument("--set", action="append", metavar="NODE_ID.INPUT=VALUE", help="override an input")
    validate.set_defaults(handler=cmd_validate)
    global_options.add_to_command(validate, global_options.GRAPHS)

    nodes = commands.add_parser("nodes", help="list the node definitions")
    nodes.add_argument("--json", action="store_true", help="print them as ComfyUI's /object_info")
    nodes.set_defaults(handler=cmd_nodes)
    global_options.add_to_command(nodes, global_options.GRAPHS)
