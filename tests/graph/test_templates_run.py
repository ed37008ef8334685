"""The corpus's local Flux.1 and AuraFlow templates, converted, validated and run through the executor.

Every model file a template names is written as a tiny test model under that name (the Flux.1 dev,
schnell, Fill, Canny/Depth or Kontext layout for diffusion models, OneReward's in diffusers' layout, the
all-in-one layout for checkpoints, USO's projector and LoRA, the tiny CLIP-L / T5-XXL / autoencoder /
SigLIP files); images become 64x64, steps 2, batches 1, so each runs on a CPU in seconds. Templates that
need a node class or a model family this server lacks are listed with the reason and left out:

- flux_depth_lora_example: its depth map comes from Lotus (lotus-depth-d-v1-1 with
  vae-ft-mse-840000-ema-pruned, LotusConditioning), a Stable Diffusion 2.1 UNet: another model family
  (a UNet with discrete-time sampling, an SD VAE, and as conditioning a fixed null-prompt embedding of
  its own text encoder), not a small addition.
- utility_pid_latent_upscale_dit: PiD's pixel-space decoder (pid_flux1_1024_to_4096, PiDConditioning,
  EmptyChromaRadianceLatentImage, VAELoader "pixel_space") with a Gemma 2 text encoder, fed by a
  Z-Image-Turbo (Lumina 2) text-to-image graph: two model families the engine does not run; ImageCompare
  and PiDConditioning are not in ComfyUI's recorded object_info either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engine import folders
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.test_models import write_test_models
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.graph.workflow import workflow_to_prompt
from engine.nodes import create_registry
from tests.graph.test_templates_corpus import IMAGE_LOADERS, all_nodes, node_types, templates

pytestmark = pytest.mark.slow

MIN_RUN = 12
"""Templates that run end to end (comfyui-workflow-templates-json 0.1.123+):
flux1_dev_uso_reference_image_gen, flux1_krea_dev, flux_canny_model_example, flux_dev_checkpoint_example,
flux_dev_full_text_to_image, flux_fill_inpaint_example, flux_fill_outpaint_example, flux_kontext_dev_basic,
flux_redux_model_example, flux_schnell, flux_schnell_full_text_to_image, image_flux.1_fill_dev_OneReward."""
FAMILY = re.compile(r"flux1|flux\.1|flux_dev|flux_schnell|aura_flow", re.IGNORECASE)
"""Flux.1 and AuraFlow model files (Flux.2, Flux 3 and the API nodes are other families)."""
DIFFUSION_VARIANTS = (
    ("fill", "flux1-fill-dev"),
    ("canny", "flux1-canny-dev"),
    ("depth", "flux1-canny-dev"),  # the same layout: 128 input channels, a control latent beside the noise
    ("kontext", "flux1-kontext-dev"),
    ("schnell", "flux1-schnell"),
)
"""Which tiny test file, in that variant's real key layout, stands in for a template's Flux.1 file."""
SIDE, STEPS = 64, 2
GIB = 2**30


def stand_in_for(directory: str, name: str) -> str | None:
    """The written test model that stands in for a template's model file, by folder and name."""
    lowered = name.lower()
    if directory == "diffusion_models" and "onereward" in lowered:
        return "diffusion_models/flux.1-fill-dev-OneReward-transformer_fp8.safetensors"
    if directory == "diffusion_models" and FAMILY.search(lowered):
        variant = next((file for word, file in DIFFUSION_VARIANTS if word in lowered), "flux1-dev")
        return f"diffusion_models/{variant}.safetensors"
    if directory == "clip_vision" and "sigclip" in lowered:
        return "clip_vision/sigclip_vision_patch14_384.safetensors"
    if directory == "style_models" and "redux" in lowered:
        return "style_models/flux1-redux-dev.safetensors"
    if directory == "checkpoints" and "aura_flow" in lowered:
        return "checkpoints/aura_flow_0.3.safetensors"
    if directory == "checkpoints" and "schnell" in lowered:
        return "checkpoints/flux1-schnell-fp8.safetensors"
    if directory == "checkpoints" and FAMILY.search(lowered):
        return "checkpoints/flux1-dev-fp8.safetensors"
    if directory == "model_patches" and "uso" in lowered:
        return "model_patches/uso-flux1-projector-v1.safetensors"
    if directory == "loras" and "uso" in lowered:
        return "loras/uso-flux1-dit-lora-v1.safetensors"
    if directory == "loras" and "removal" in lowered:
        return "loras/removal_timestep_alpha-2-1740.safetensors"
    if directory in ("text_encoders", "clip") and "clip_l" in lowered:
        return "text_encoders/clip_l.safetensors"
    if directory in ("text_encoders", "clip") and "t5xxl" in lowered:
        return "text_encoders/t5xxl_fp16.safetensors"
    if directory == "vae" and lowered == "ae.safetensors":
        return "vae/ae.safetensors"
    return None


def declared_models(workflow: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (model["directory"], model["name"])
        for node in all_nodes(workflow)
        for model in (node.get("properties") or {}).get("models") or []
    ]


def left_out_reason(workflow: dict[str, Any], registry: NodeRegistry) -> str | None:
    missing = sorted(node_types(workflow) - set(registry))
    if missing:
        return f"missing node classes: {', '.join(missing)}"
    for directory, name in declared_models(workflow):
        if stand_in_for(directory, name) is None:
            return f"no test model for {directory}/{name}"
    return None


def place_models(workflow: dict[str, Any], tiny: Path, models: Path) -> None:
    """Hard links to the tiny models, under the template's own names (and the tokenizers beside them)."""
    for source in tiny.rglob("*"):
        if source.is_file():
            target = models / source.relative_to(tiny)
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                os.link(source, target)
    for directory, name in declared_models(workflow):
        stand_in = stand_in_for(directory, name)
        assert stand_in is not None
        target = models / directory / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(tiny / stand_in, target)


def place_images(workflow: dict[str, Any], input_dir: Path) -> None:
    for node in all_nodes(workflow):
        values = node.get("widgets_values") or []
        if node["type"] in IMAGE_LOADERS and values and isinstance(values[0], str):
            pixels = torch.zeros(SIDE, SIDE, 4, dtype=torch.uint8)
            pixels[..., :3] = 128
            pixels[..., 3] = 255
            pixels[SIDE // 4 : SIDE // 2, SIDE // 4 : SIDE // 2, 3] = 0
            image = Image.fromarray(pixels.numpy(), mode="RGBA")
            target = input_dir / values[0]
            # A JPEG has no alpha channel: those templates get the RGB part.
            (image.convert("RGB") if target.suffix.lower() in (".jpg", ".jpeg") else image).save(target)


def shrink(prompt: dict[str, Any]) -> None:
    """Small images, few steps, one image per batch: the graph's structure is what is under test."""
    for node in prompt.values():
        inputs = node["inputs"]
        for key, value in list(inputs.items()):
            if isinstance(value, (list, bool)):
                continue
            if key in ("width", "height") and isinstance(value, int):
                inputs[key] = SIDE
            elif key == "steps" and isinstance(value, int):
                inputs[key] = STEPS
            elif key == "batch_size" and isinstance(value, int):
                inputs[key] = 1
            elif key == "megapixels" and isinstance(value, float):
                inputs[key] = SIDE * SIDE / 1024**2


def test_local_flux1_and_auraflow_templates_run_end_to_end_on_the_tiny_models(
    tmp_path: Path, report: Callable[[str], None]
) -> None:
    registry = create_registry()[0]
    tiny = tmp_path / "tiny"
    write_test_models(tiny)
    ran: list[str] = []
    left_out: list[str] = []
    previous = folders.current()
    try:
        for name, workflow in templates():
            if name.startswith("api_") or not any(FAMILY.search(n) for _, n in declared_models(workflow)):
                continue
            reason = left_out_reason(workflow, registry)
            if reason is not None:
                left_out.append(f"{name} ({reason})")
                continue
            root = tmp_path / name
            settings = folders.configure(base_dir=root, models_dir=root / "models")
            for directory in (settings.input_dir, settings.output_dir, settings.temp_dir):
                directory.mkdir(parents=True)
            place_models(workflow, tiny, root / "models")
            place_images(workflow, settings.input_dir)
            prompt = workflow_to_prompt(workflow, registry)
            shrink(prompt)
            validation = validate_prompt(registry, prompt)
            assert validation.ok, (name, validation.node_errors_json())
            manager = ModelManager(torch.device("cpu"), torch.float32, budget_bytes=4 * GIB)
            result = Executor(registry, resources={"models": manager}).run(
                validation.validated, prompt_id=name
            )
            assert result.status == "success", (name, result.failure)
            assert result.outputs, name
            ran.append(name)
    finally:
        folders.use(previous)
    report(f"Flux.1/AuraFlow templates run end to end: {len(ran)} ({', '.join(ran)})")
    report("left out: " + ("; ".join(left_out) or "none"))
    print("ran:", ran)
    print("left out:", *left_out, sep="\n  ")
    assert len(ran) >= MIN_RUN, ran
