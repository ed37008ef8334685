"""After a run runs out of memory, the next job on the same executor and model manager succeeds.

The model manager unloads every model on out-of-memory; the executor's cache still holds the loader
nodes' outputs, so the next run must bring the weights back by itself rather than fail or reuse freed
modules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import folders
from engine.diffusion import flux
from engine.diffusion.model_manager import ModelManager
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import conditioning, image, latent, loaders, sampling, text_encoders

EXAMPLE = Path(__file__).parent / "comfy_examples" / "flux_schnell_example.prompt.json"


def small_flux_prompt() -> dict[str, Any]:
    prompt = json.loads(EXAMPLE.read_text())
    prompt["5"]["inputs"].update(width=64, height=64)
    return prompt


@pytest.mark.slow
def test_the_job_after_an_out_of_memory_succeeds(
    dirs: folders.FolderSettings, manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = NodeRegistry()
    for module in (loaders, latent, image, conditioning, text_encoders, sampling):
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    validated = validate_prompt(registry, small_flux_prompt()).validated
    assert validated is not None
    executor = Executor(registry, resources={"models": manager})

    real_predict = flux.predict
    calls = {"oom": 0, "real": 0}

    def predict_once_out_of_memory(*args: Any, **kwargs: Any) -> torch.Tensor:
        if calls["oom"] == 0:
            calls["oom"] += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        calls["real"] += 1
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(flux, "predict", predict_once_out_of_memory)

    failed = executor.run(validated, prompt_id="out-of-memory")
    assert failed.status == "error" and failed.failure is not None
    assert "every model was unloaded" in failed.failure.exception_message
    assert manager.resident() == []

    succeeded = executor.run(validated, prompt_id="next")
    assert succeeded.status == "success", succeeded.failure
    ((_, output),) = succeeded.outputs.items()
    (saved,) = output["images"]
    assert (dirs.output_dir / saved["subfolder"] / saved["filename"]).stat().st_size > 0
    assert calls["real"] == 4, "the next job samples its 4 steps with the reloaded model"
    assert any(key.part.startswith("diffusion_model") for key in manager.resident()), manager.resident()
