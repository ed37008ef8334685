"""The `engine` command as a user runs it: run, validate, nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def graph(tmp_path: Path) -> Path:
    path = tmp_path / "graph.json"
    path.write_text(
        json.dumps(
            {
                "1": {"class_type": "ExampleTextCase", "inputs": {"text": "hello", "case": "upper"}},
                "2": {"class_type": "ExampleTextRepeat", "inputs": {"text": ["1", 0], "times": 2}},
                "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
            }
        )
    )
    return path


def engine(*args: str, tmp_path: Path) -> int:
    return main(["--custom-nodes", str(REPO / "custom_nodes"), "--base-dir", str(tmp_path), *args])


def test_run_prints_the_outputs(graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine("run", str(graph), "--set", "1.case=reverse", "--set", "2.times=3", tmp_path=tmp_path) == 0
    assert "text: olleh olleh olleh" in capsys.readouterr().out


def test_run_rejects_an_invalid_graph(
    graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert engine("run", str(graph), "--set", "2.times=0", tmp_path=tmp_path) == 1
    assert "smaller than min of 1" in capsys.readouterr().err


def test_run_reports_an_unknown_override_target(graph: Path, tmp_path: Path, capsys) -> None:
    assert engine("run", str(graph), "--set", "9.text=x", tmp_path=tmp_path) == 1
    assert "NODE_ID.INPUT=VALUE" in capsys.readouterr().err


def test_validate_prints_comfyui_errors(
    graph: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert engine("validate", str(graph), "--set", "1.case=shout", tmp_path=tmp_path) == 1
    body = json.loads(capsys.readouterr().out)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"
    assert engine("validate", str(graph), tmp_path=tmp_path) == 0
    assert json.loads(capsys.readouterr().out) == {"node_errors": {}, "outputs": ["3"]}


def test_validate_reports_unreadable_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert engine("validate", str(bad), tmp_path=tmp_path) == 1
    assert "not a JSON file" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_nodes_json_is_object_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert engine("nodes", "--json", tmp_path=tmp_path) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ExampleTextRepeat"]["input_order"] == {
        "required": ["text", "times"],
        "optional": ["separator"],
    }
