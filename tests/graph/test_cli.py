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


def test_set_refuses_an_input_the_node_does_not_have(graph: Path, tmp_path: Path, capsys) -> None:
    assert engine("run", str(graph), "--set", "2.tmes=3", tmp_path=tmp_path) == 1
    message = capsys.readouterr().err
    assert "node 2 (ExampleTextRepeat) has no input 'tmes'" in message
    assert "did you mean 'times'?" in message
    assert "text, times, separator" in message  # ExampleTextRepeat's INPUT_TYPES, in declaration order


def test_run_prints_the_full_path_of_each_saved_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "image.json"
    path.write_text(
        json.dumps(
            {
                "1": {
                    "class_type": "EmptyImage",
                    "inputs": {"width": 8, "height": 8, "batch_size": 2, "color": 0},
                },
                "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a/b"}},
            }
        )
    )
    assert engine("run", str(path), "--out", str(tmp_path / "saved"), tmp_path=tmp_path) == 0
    printed = {line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if ": " in line}
    on_disk = {str(file) for file in (tmp_path / "saved").rglob("*.png")}
    assert len(on_disk) == 2 and printed == on_disk


def test_an_empty_model_list_names_the_folders_searched(tmp_path: Path, capsys) -> None:
    path = tmp_path / "checkpoint.json"
    path.write_text(
        json.dumps(
            {
                "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "model.safetensors"}},
                "2": {
                    "class_type": "EmptyLatentImage",
                    "inputs": {"width": 64, "height": 64, "batch_size": 1},
                },
                "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
                "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "x"}},
            }
        )
    )
    extra = tmp_path / "extra.yaml"
    extra.write_text(f"mine:\n  base_path: {tmp_path / 'elsewhere'}\n  checkpoints: ckpts\n")
    assert engine("--extra-model-paths", str(extra), "run", str(path), tmp_path=tmp_path) == 1
    message = capsys.readouterr().err
    assert "'model.safetensors' not in []" in message
    assert f"model files are looked up in {tmp_path / 'models'}" in message
    assert "checkpoints" in message and str(tmp_path / "elsewhere" / "ckpts") in message


@pytest.mark.parametrize("command", ["run", "validate"])
def test_shared_options_are_accepted_after_the_command(
    command: str, graph: Path, tmp_path: Path, capsys
) -> None:
    options = ["--custom-nodes", str(REPO / "custom_nodes"), "--base-dir", str(tmp_path), "-v"]
    assert main([command, str(graph), *options]) == 0
    assert main(["--custom-nodes", "/nowhere", command, str(graph), *options]) == 0  # the later one wins
    assert main(["nodes", *options]) == 0
    assert "ExampleTextRepeat" in capsys.readouterr().out
