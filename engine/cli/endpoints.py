"""`engine endpoints list|publish|unpublish|export|import`: published endpoints from a terminal.

The commands talk to the running server's admin routes (engine.api.admin), so a published endpoint is
served at once, checked against the nodes and models of the server that will run it, and no restart is
needed; the server is the only writer of its graphs folder. `--offline` does the same work on the graphs
folder directly, for a server that is not running (it serves the result at its next start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.cli import global_options
from engine.cli.console import err
from engine.cli.settings_args import settings_from

DEFAULT_SERVER = "http://127.0.0.1:8188"
ADMIN = "/v1/admin/endpoints"
TIMEOUT_SECONDS = 300
"""Publishing reads the model files' headers and validates the graph; on a busy server that takes a while."""


class CommandError(Exception):
    """What to tell the user; the command exits with 1."""


def _read_json(path: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise CommandError(f"{path}: cannot be read ({exc.strerror})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"{path}: not a JSON file ({exc})") from exc


def _call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    """One request to the server; its JSON answer, or CommandError with the server's message."""
    url = args.server.rstrip("/") + path
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if args.key:
        headers["x-api-key"] = args.key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise CommandError(f"{method} {url}: {exc.code} {message}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CommandError(
            f"no server answered at {args.server} ({reason}): start it with `engine serve`, point "
            "--server (or ENGINE_SERVER) at it, or pass --offline to write into the graphs folder for its "
            "next start"
        ) from exc


class _Offline:
    """The graphs folder with the nodes and models of this machine, as a stopped server would load them."""

    def __init__(self, args: argparse.Namespace) -> None:
        from engine.endpoints import load_endpoints  # torch comes with the nodes: only when asked for
        from engine.nodes import create_registry

        self.directory = settings_from(args).graphs_dir
        self.registry, _ = create_registry(args.custom_nodes)
        self.endpoints = load_endpoints(self.directory, self.registry)


def _publish(args: argparse.Namespace, declaration: Any) -> Mapping[str, Any]:
    if not args.offline:
        return _call(args, "POST", ADMIN, declaration)
    from engine.endpoints import publish

    offline = _Offline(args)
    endpoint = publish.publish(declaration, offline.directory, offline.registry, offline.endpoints)
    return {"endpoint": {"id": endpoint.id, "apis": list(endpoint.apis)}, "replaced": False}


def _report(answer: Mapping[str, Any], offline: bool) -> None:
    endpoint = answer["endpoint"]
    verb = "replaced" if answer.get("replaced") else "published"
    where = " into the graphs folder; the server serves it from its next start" if offline else ""
    print(f"{verb} {endpoint['id']} ({', '.join(endpoint['apis'])} style){where}")
    for url in (url for urls in endpoint.get("urls", {}).values() for url in urls):
        print(f"  POST {url}")


def _with_name(args: argparse.Namespace, declaration: Any) -> Any:
    if not isinstance(declaration, dict):
        raise CommandError(f"{args.file}: must hold a JSON object declaring the endpoint")
    overrides = {"replace": True} if args.replace else {}
    if args.name:
        overrides["name"] = args.name
    return {**declaration, **overrides}


def cmd_publish(args: argparse.Namespace) -> int:
    _report(_publish(args, _with_name(args, _read_json(args.file))), args.offline)
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    data = _read_json(args.file)
    if args.offline:
        from engine.endpoints.sharing import import_request

        _report(_publish(args, import_request(data, name=args.name, replace=args.replace)), True)
        return 0
    query = {"replace": "true" if args.replace else "false", **({"name": args.name} if args.name else {})}
    _report(_call(args, "POST", f"{ADMIN}/import?{urllib.parse.urlencode(query)}", data), False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.offline:
        from engine.endpoints.publish import PublishError
        from engine.endpoints.sharing import export_workflow

        offline = _Offline(args)
        endpoint = offline.endpoints.get(args.name)
        if endpoint is None:
            raise PublishError("not_found", f"no endpoint named '{args.name}'")
        workflow = export_workflow(endpoint, offline.registry)
    else:
        workflow = _call(args, "GET", f"{ADMIN}/{urllib.parse.quote(args.name)}/export")
    text = json.dumps(workflow, indent=2) + "\n"
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        err.print(f"wrote {escape(args.output)}: open it in ComfyUI, or `engine endpoints import` it")
    return 0


def cmd_unpublish(args: argparse.Namespace) -> int:
    if args.offline:
        from engine.endpoints import publish

        offline = _Offline(args)
        publish.unpublish(args.name, offline.directory, offline.endpoints)
    else:
        _call(args, "DELETE", f"{ADMIN}/{urllib.parse.quote(args.name)}")
    print(f"unpublished {args.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.offline:
        rows = [
            (e.id, ", ".join(e.apis), e.published, e.unavailable, e.title)
            for e in _Offline(args).endpoints.values()
        ]
    else:
        listing = _call(args, "GET", "/v1/endpoints")["endpoints"]
        rows = [
            (e["id"], ", ".join(e["apis"]), e["published"], e["unavailable_reason"], e["title"])
            for e in listing
        ]
    table = Table("id", "styles", "origin", "state", "title")
    for endpoint_id, apis, published, unavailable, title in rows:
        state = f"unavailable: {unavailable}" if unavailable else "available"
        table.add_row(endpoint_id, apis, "published" if published else "graphs/", state, title)
    Console(soft_wrap=True).print(table)
    return 0


def _guarded(handler: Any) -> Any:
    """Runs a command, printing a CommandError or a refused declaration as one line and exiting 1."""

    def run(args: argparse.Namespace) -> int:
        refused: tuple[type[Exception], ...] = (CommandError,)
        if args.offline:  # engine.endpoints imports torch: seconds a command talking to a server never waits
            from engine.endpoints.errors import EndpointError
            from engine.endpoints.publish import PublishError

            refused += (PublishError, EndpointError)
        try:
            return int(handler(args))
        except refused as exc:
            err.print(f"[red]{escape(str(exc))}", highlight=False)
            return 1

    return run


def add_commands(commands: argparse._SubParsersAction) -> None:
    endpoints = commands.add_parser("endpoints", help="list, publish, unpublish, export and import endpoints")
    actions = endpoints.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the endpoints served, shipped and published")
    listing.set_defaults(handler=_guarded(cmd_list))
    publish = actions.add_parser("publish", help="publish a declaration (JSON: workflow, fields, output)")
    publish.add_argument("file", help="the declaration (.json), or - for standard input")
    publish.set_defaults(handler=_guarded(cmd_publish))
    imported = actions.add_parser("import", help="publish an exported workflow file")
    imported.add_argument("file", help="a workflow file made by export (.json), or - for standard input")
    imported.set_defaults(handler=_guarded(cmd_import))
    for action in (publish, imported):
        action.add_argument("--name", help="publish under this name (a name, or owner/app for fal style too)")
        action.add_argument(
            "--replace", action="store_true", help="replace a published endpoint of that name"
        )
    unpublish = actions.add_parser("unpublish", help="stop serving a published endpoint and delete it")
    unpublish.add_argument("name")
    unpublish.set_defaults(handler=_guarded(cmd_unpublish))
    export = actions.add_parser("export", help="one editor workflow file that declares the endpoint")
    export.add_argument("name")
    export.add_argument("-o", "--output", metavar="FILE", help="where to write it (default: standard output)")
    export.set_defaults(handler=_guarded(cmd_export))
    for action in (listing, publish, imported, unpublish, export):
        action.add_argument(
            "--server",
            default=os.environ.get("ENGINE_SERVER", DEFAULT_SERVER),
            help=f"the running server (default {DEFAULT_SERVER}; env ENGINE_SERVER)",
        )
        action.add_argument(
            "--key",
            default=os.environ.get("ENGINE_API_KEY"),
            help="an admin key (`engine keys add NAME --admin`; env ENGINE_API_KEY); "
            "a server started with --open-access needs none",
        )
        action.add_argument(
            "--offline",
            action="store_true",
            help="no server: work on the graphs folder, which a server serves from its next start",
        )
        action.add_argument(
            "--graphs", metavar="DIR", help="with --offline: the templates (default: ./graphs)"
        )
        global_options.add_to_command(action, global_options.ALL)
