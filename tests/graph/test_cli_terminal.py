"""The `engine` command in a real process, as a terminal (FORCE_COLOR, as rich reads it) or a pipe sees it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from engine.nodes import create_registry

REPO = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

LOGGING_NODE = '''
import logging
import time


class LogAndWait:
    """Runs long enough for the progress bar to be drawn, and logs in the middle of it."""

    CATEGORY = "test"
    FUNCTION = "run"
    RETURN_TYPES = ("STRING",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    def run(self, text):
        time.sleep(0.6)
        logging.getLogger("test.node").warning("a line logged by the node")
        time.sleep(0.6)
        return {"ui": {"text": [text]}, "result": (text,)}


NODE_CLASS_MAPPINGS = {"LogAndWait": LogAndWait}
'''


def engine(*args: str, cwd: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), **environ}
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def progress_run(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`engine run` of one slow, logging node on a 100-column terminal."""
    tmp_path = tmp_path_factory.mktemp("progress")
    package = tmp_path / "nodes" / "log_and_wait"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(LOGGING_NODE)
    graph = tmp_path / "graph.json"
    graph.write_text(json.dumps({"1": {"class_type": "LogAndWait", "inputs": {"text": "hi"}}}))
    ran = engine(
        "--custom-nodes",
        str(tmp_path / "nodes"),
        "run",
        str(graph),
        cwd=tmp_path,
        FORCE_COLOR="1",
        COLUMNS="100",
    )
    assert ran.returncode == 0, ran.stderr
    assert "LogAndWait #1" in ANSI.sub("", ran.stderr), "the progress bar was never drawn"
    return ran


def test_a_log_line_prints_on_a_line_of_its_own_above_the_progress_bar(
    progress_run: subprocess.CompletedProcess[str],
) -> None:
    screen_lines = ANSI.sub("", progress_run.stderr).splitlines()
    logged = [line for line in screen_lines if "a line logged by the node" in line]
    assert len(logged) == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ WARNING test\.node: a line logged by the node", logged[0])


def test_a_node_without_steps_shows_no_step_count(progress_run: subprocess.CompletedProcess[str]) -> None:
    assert not re.search(r"\d+/\S*", ANSI.sub("", progress_run.stderr))  # "0/None" before


def test_nodes_never_cuts_a_name_on_a_narrow_terminal_or_in_a_pipe(tmp_path: Path) -> None:
    names = sorted(create_registry([REPO / "custom_nodes"])[0])
    piped = engine("nodes", cwd=REPO, COLUMNS="80")
    assert piped.returncode == 0, piped.stderr
    assert [line.split("\t")[0] for line in piped.stdout.splitlines()] == names
    terminal = engine("nodes", cwd=REPO, COLUMNS="80", FORCE_COLOR="1")
    assert terminal.returncode == 0, terminal.stderr
    shown = {word for line in ANSI.sub("", terminal.stdout).splitlines() for word in line.split()}
    assert set(names) <= shown
