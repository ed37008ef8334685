"""ComfyUI's AuraFlow and Flux example graphs, unchanged, against the tiny test models on the CPU.

The prompts in comfy_examples/ are the API form ComfyUI made of its published example workflows
(model files named as users have them, 1024x1024 images).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engine import folders
from engine.diffusion.model_manager import ModelManager
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import conditioning, image, latent, loaders, sampling, text_encoders

EXAMPLES = Path(__file__).parent / "comfy_examples"
EXAMPLE_NAMES = sorted(path.name.removesuffix(".prompt.json") for path in EXAMPLES.glob("*.prompt.json"))
SAMPLERS = {"KSampler", "SamplerCustomAdvanced"}

pytestmark = pytest.mark.usefixtures("dirs", "manager")


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / f"{name}.prompt.json").read_text())


def of_class(prompt: dict[str, Any], class_type: str) -> list[dict[str, Any]]:
    return [node["inputs"] for node in prompt.values() if node["class_type"] == class_type]


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for module in (loaders, latent, image, conditioning, text_encoders, sampling):
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    return registry


def test_the_four_examples_are_here() -> None:
    assert EXAMPLE_NAMES == [
        "aura_flow_0.2_example",
        "flux_dev_example",
        "flux_schnell_checkpoint_example",
        "flux_schnell_example",
    ]


def load_models(manager: ModelManager, prompt: dict[str, Any]) -> tuple[Any, Any, Any]:
    """MODEL, CLIP and VAE through the example's own loader nodes."""
    for inputs in of_class(prompt, "CheckpointLoaderSimple"):
        return loaders.CheckpointLoaderSimple(manager).load_checkpoint(**inputs)
    (model,) = loaders.UNETLoader(manager).load_unet(**of_class(prompt, "UNETLoader")[0])
    (clip,) = text_encoders.DualCLIPLoader(manager).load_clip(**of_class(prompt, "DualCLIPLoader")[0])
    (vae,) = loaders.VAELoader(manager).load_vae(**of_class(prompt, "VAELoader")[0])
    return model, clip, vae


@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_every_node_up_to_the_sampler_runs_and_a_latent_decodes_to_a_png_of_the_requested_size(
    name: str, dirs: folders.FolderSettings, manager: ModelManager
) -> None:
    prompt = example(name)
    model, clip, vae = load_models(manager, prompt)
    for inputs in of_class(prompt, "CLIPTextEncode"):
        (encoded,) = conditioning.CLIPTextEncode().encode(clip, inputs["text"])
        ((cond, extras),) = encoded
        assert cond.shape[0] == 1 and cond.shape[2] == 32
        assert (extras["pooled_output"] is None) == (model.architecture.name == "AuraFlow")
    ((empty_node, size),) = [
        (latent.NODE_CLASS_MAPPINGS[node["class_type"]](), node["inputs"])
        for node in prompt.values()
        if node["class_type"] in latent.NODE_CLASS_MAPPINGS
    ]
    (empty,) = empty_node.generate(**size)
    batch, _, height, width = empty["samples"].shape
    assert (height * 8, width * 8) == (size["height"], size["width"]) == (1024, 1024)

    sampled = torch.randn(
        batch, model.latent_format.channels, height, width, generator=torch.Generator().manual_seed(0)
    )
    (pixels,) = image.VAEDecode().decode(vae, {"samples": sampled})
    save = of_class(prompt, "SaveImage")[0]
    result = image.SaveImage().save_images(pixels, save["filename_prefix"], prompt=prompt)

    (saved,) = result["ui"]["images"]
    with Image.open(dirs.output_dir / saved["subfolder"] / saved["filename"]) as png:
        assert png.size == (size["width"], size["height"])
        assert json.loads(png.text["prompt"]) == prompt


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_example_graph_runs_end_to_end(
    name: str, registry: NodeRegistry, dirs: folders.FolderSettings, manager: ModelManager
) -> None:
    prompt = example(name)
    workflow = {"nodes": [], "links": [], "extra": {"example": name}, "version": 0.4}
    validation = validate_prompt(registry, prompt)
    assert validation.ok, validation

    result = Executor(registry, resources={"models": manager}).run(
        validation.validated, prompt_id=name, extra_data={"extra_pnginfo": {"workflow": workflow}}
    )

    assert result.status == "success", result.failure
    assert SAMPLERS & {prompt[node]["class_type"] for node in result.executed}
    ((save_node, output),) = result.outputs.items()
    assert prompt[save_node]["class_type"] == "SaveImage"
    (saved,) = output["images"]
    with Image.open(dirs.output_dir / saved["subfolder"] / saved["filename"]) as png:
        assert png.size == (1024, 1024)
        assert json.loads(png.text["prompt"]) == prompt
        assert json.loads(png.text["workflow"]) == workflow
        assert len(png.getcolors(maxcolors=2**24) or range(2**24)) > 1000, "the image should not be flat"


def _run_pixels(
    registry: NodeRegistry, prompt: dict[str, Any], output_dir: Path, manager: ModelManager
) -> bytes:
    """The saved image's pixels after a run with a fresh executor (and so an empty cache)."""
    validation = validate_prompt(registry, prompt)
    assert validation.validated is not None
    result = Executor(registry, resources={"models": manager}).run(
        validation.validated, prompt_id="determinism"
    )
    assert result.status == "success", result.failure
    assert result.cached == [], "every node must really run, the sampler included"
    ((_, output),) = result.outputs.items()
    (saved,) = output["images"]
    with Image.open(output_dir / saved["subfolder"] / saved["filename"]) as png:
        return png.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLE_NAMES)
def test_the_same_seed_gives_the_same_image_and_another_seed_another(
    name: str, registry: NodeRegistry, dirs: folders.FolderSettings, manager: ModelManager
) -> None:
    prompt = example(name)
    first = _run_pixels(registry, prompt, dirs.output_dir, manager)
    assert _run_pixels(registry, prompt, dirs.output_dir, manager) == first
    reseeded = json.loads(json.dumps(prompt))
    for node in reseeded.values():
        for seed_input in ("seed", "noise_seed"):
            if seed_input in node["inputs"]:
                node["inputs"][seed_input] += 1
    assert _run_pixels(registry, reseeded, dirs.output_dir, manager) != first
