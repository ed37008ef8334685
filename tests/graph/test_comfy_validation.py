"""validate_prompt against ComfyUI's recorded answers (comfy-fixtures/validation.json): 30 prompts built
on its Flux schnell example, each with the verdict, the top-level error type and every node's error
types that ComfyUI's own validate_prompt gave.

ComfyUI's model folders held the example's model files as empty files and its input folder an 8x8
PNG named fixture.png; each case is validated here under the same folders. The messages are the
engine's own words; what must agree is which prompt is refused, for which reason, at which nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from engine import folders
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import create_registry
from tests.comfy_fixtures import index

CASES = {case["name"]: case for case in index("validation")["cases"]}
LINK_ERROR = "bad_linked_input"
DEVIATIONS: dict[str, tuple[dict[str, Any], str]] = {
    "cycle": (
        {
            "valid": False,
            "error": "prompt_outputs_failed_validation",
            "node_errors": {"13": ["exception_during_validation"], "30": ["exception_during_validation"]},
        },
        "ComfyUI recurses into RecursionError and answers a failed validation with no node errors; the "
        "engine names the cycle",
    ),
    "link_to_missing_node": (
        {"valid": False, "error": "prompt_outputs_failed_validation", "node_errors": {"13": [LINK_ERROR]}},
        "ComfyUI's KeyError surfaces as exception_during_inner_validation under the linked node's id",
    ),
    "link_output_index_out_of_range": (
        {"valid": False, "error": "prompt_outputs_failed_validation", "node_errors": {"13": [LINK_ERROR]}},
        "ComfyUI's IndexError surfaces as exception_during_inner_validation",
    ),
    "inner_link_output_index_out_of_range": (
        {"valid": False, "error": "prompt_outputs_failed_validation", "node_errors": {"17": [LINK_ERROR]}},
        "ComfyUI's IndexError surfaces as exception_during_inner_validation",
    ),
    "validate_inputs_raises": (
        {"valid": True, "error": None, "node_errors": {"40": ["exception_during_validation"]}},
        "ComfyUI files the raising VALIDATE_INPUTS under exception_during_inner_validation",
    ),
    "validate_inputs_raises_only_output": (
        {
            "valid": False,
            "error": "prompt_outputs_failed_validation",
            "node_errors": {"40": ["exception_during_validation"]},
        },
        "ComfyUI files the raising VALIDATE_INPUTS under exception_during_inner_validation",
    ),
    "values_cast_in_place": (
        {
            "valid": False,
            "error": "prompt_outputs_failed_validation",
            "node_errors": {"25": ["invalid_input_type"]},
        },
        "ComfyUI truncates the INT noise_seed 7.9 to 7; the engine refuses a fractional INT",
    ),
}
"""Where the engine deliberately answers otherwise: (its verdict, how ComfyUI's differs). The recorded
verdict is still checked, so a change on either side shows up here."""


@pytest.fixture(scope="module")
def builtin() -> NodeRegistry:
    return create_registry()[0]


@pytest.fixture
def comfy_folders(tmp_path: Path) -> Iterator[Path]:
    previous = folders.current()
    settings = folders.configure(base_dir=tmp_path)
    settings.input_dir.mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 30, 30)).save(settings.input_dir / "fixture.png")
    yield tmp_path / "models"
    folders.use(previous)


def verdict(valid: bool, error: dict[str, Any] | None, node_errors: dict[str, Any]) -> dict[str, Any]:
    return {
        "valid": valid,
        "error": None if error is None else error["type"],
        "node_errors": {
            node_id: sorted(entry["type"] for entry in errors["errors"])
            for node_id, errors in node_errors.items()
        },
    }


@pytest.mark.parametrize("name", sorted(name for name, case in CASES.items() if "result" in case))
def test_validation_gives_comfyuis_verdict(name: str, builtin: NodeRegistry, comfy_folders: Path) -> None:
    case = CASES[name]
    for folder, files in case["model_files"].items():
        for file in files:
            (comfy_folders / folder).mkdir(parents=True, exist_ok=True)
            (comfy_folders / folder / file).touch()
    result = validate_prompt(builtin, case["prompt"], case["partial_execution_targets"])
    ours = verdict(
        result.ok, None if result.error is None else result.error.to_json(), result.node_errors_json()
    )
    valid, error, _, node_errors = case["result"]
    comfy = verdict(valid, error, node_errors)
    if name in DEVIATIONS:
        expected, why = DEVIATIONS[name]
        assert comfy != expected, f"ComfyUI now agrees with the engine on {name}: drop the deviation"
        assert ours == expected, why
    else:
        assert ours == comfy
