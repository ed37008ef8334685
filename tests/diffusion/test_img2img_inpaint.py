"""img2img, inpainting and outpainting graphs through the executor on the tiny Flux and AuraFlow models.

The weights are random, so what the images look like proves nothing; what is checked is what
ComfyUI's semantics make exact: denoise 0 returns the input latent; denoise 0.6 samples along the
last steps of a longer schedule, the one ComfyUI's KSampler recorded (comfy-fixtures/sigmas); and
wherever the noise mask is 0 the sampled latent is the input latent bit for bit, in every sampler
path (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced with either guider).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from PIL import Image

from engine import folders
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import create_registry
from tests import comfy_fixtures

SIZE = 64
"""Image side in pixels: an 8x8 latent, small enough to sample on a CPU in a second."""
HOLE = slice(16, 48)
"""The masked square, on 8-pixel cell boundaries: the latent mask is exactly 1 on cells 2..5, 0 elsewhere."""
HOLE_CELLS = slice(2, 6)

Prompt = dict[str, dict[str, Any]]


class Capture:
    """A test sink: hands whatever it is given back as its UI output, so the test can read it."""

    CATEGORY = "test"
    FUNCTION = "capture"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"value": ("*",)}}

    def capture(self, value: Any) -> dict[str, Any]:
        return {"ui": {"value": [value]}}


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    registry = create_registry()[0]
    registry.register({"Capture": Capture}, {})
    return registry


@pytest.fixture
def sigmas_seen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Every sigma the diffusion model is evaluated at, in order."""
    seen: list[float] = []
    original = LoadedDiffusionModel.apply_model

    def spy(
        self: LoadedDiffusionModel, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs
    ) -> torch.Tensor:
        seen.append(float(sigma[0]))
        return original(self, x, sigma, inputs)

    monkeypatch.setattr(LoadedDiffusionModel, "apply_model", spy)
    return seen


@pytest.fixture
def input_image(dirs: folders.FolderSettings) -> Iterator[str]:
    """A smooth RGBA picture whose alpha is 0 on the HOLE square (LoadImage's mask is 1 there)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    rgb = torch.stack([x, y, (x + y) / 2], dim=-1)
    alpha = torch.ones(SIZE, SIZE, 1)
    alpha[HOLE, HOLE] = 0
    pixels = (torch.cat([rgb, alpha], dim=-1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels, mode="RGBA").save(dirs.input_dir / "photo.png")
    yield "photo.png"


FAMILIES = {
    "flux": {
        "loaders": {
            "unet": {
                "class_type": "UNETLoader",
                "inputs": {"unet_name": "flux1-schnell.safetensors", "weight_dtype": "default"},
            },
            "clip": {
                "class_type": "DualCLIPLoader",
                "inputs": {
                    "clip_name1": "t5xxl_fp16.safetensors",
                    "clip_name2": "clip_l.safetensors",
                    "type": "flux",
                },
            },
            "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        },
        "model": ["unet", 0],
        "clip": ["clip", 0],
        "vae": ["vae", 0],
        "sampling": "flux_schnell",
    },
    "auraflow": {
        "loaders": {
            "ckpt": {
                "class_type": "CheckpointLoaderSimple",
                "inputs": {"ckpt_name": "aura_flow_0.3.safetensors"},
            }
        },
        "model": ["ckpt", 0],
        "clip": ["ckpt", 1],
        "vae": ["ckpt", 2],
        "sampling": "auraflow_shift1.73",
    },
}


def graph(family: str, image: str) -> Prompt:
    """Loaders, a prompt and the input image; samplers and captures are added by each test."""
    spec = FAMILIES[family]
    prompt: Prompt = {key: dict(node) for key, node in spec["loaders"].items()}
    prompt["text"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "a red barn", "clip": spec["clip"]}}
    prompt["image"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    return prompt


def ksampler(
    family: str, latent: list[Any], denoise: float, steps: int = 4, model: list[Any] | None = None
) -> dict[str, Any]:
    return {
        "class_type": "KSampler",
        "inputs": {
            "model": model or FAMILIES[family]["model"],
            "seed": 7,
            "steps": steps,
            "cfg": 1.0,
            "sampler_name": "euler",
            "scheduler": "simple",
            "positive": ["text", 0],
            "negative": ["text", 0],
            "latent_image": latent,
            "denoise": denoise,
        },
    }


def run(registry: NodeRegistry, manager: ModelManager, prompt: Prompt) -> dict[str, Any]:
    """Run the prompt; returns what each Capture node was given, by node id."""
    validation = validate_prompt(registry, prompt)
    assert validation.ok, validation.node_errors_json()
    result = Executor(registry, resources={"models": manager}).run(validation.validated, prompt_id="test")
    assert result.status == "success", result.failure
    return {node: output["value"][0] for node, output in result.outputs.items()}


def capture(prompt: Prompt, name: str, source: list[Any]) -> None:
    prompt[f"capture_{name}"] = {"class_type": "Capture", "inputs": {"value": source}}


def img2img(family: str, image: str, denoise: float) -> Prompt:
    prompt = graph(family, image)
    vae = FAMILIES[family]["vae"]
    prompt["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": vae}}
    prompt["sample"] = ksampler(family, ["encode", 0], denoise)
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}}
    capture(prompt, "input", ["encode", 0])
    capture(prompt, "output", ["sample", 0])
    capture(prompt, "image", ["decode", 0])
    return prompt


@pytest.mark.parametrize("family", FAMILIES)
def test_img2img_at_denoise_0_6_runs_the_last_steps_of_comfyuis_longer_schedule(
    family: str, registry: NodeRegistry, manager: ModelManager, input_image: str, sigmas_seen: list[float]
) -> None:
    out = run(registry, manager, img2img(family, input_image, 0.6))

    recorded = comfy_fixtures.tensors("sigmas")[
        f"ksampler/{FAMILIES[family]['sampling']}/simple/4/euler/denoise0.6"
    ]
    assert torch.allclose(torch.tensor(sigmas_seen), recorded[:-1], atol=1e-6), (sigmas_seen, recorded)
    assert sigmas_seen[0] < 0.99
    assert out["capture_image"].shape == (1, SIZE, SIZE, 3)
    assert out["capture_output"]["samples"].shape == out["capture_input"]["samples"].shape
    assert not torch.equal(out["capture_output"]["samples"], out["capture_input"]["samples"])


@pytest.mark.parametrize("family", FAMILIES)
def test_img2img_at_denoise_0_returns_the_input_latent_untouched(
    family: str, registry: NodeRegistry, manager: ModelManager, input_image: str, sigmas_seen: list[float]
) -> None:
    out = run(registry, manager, img2img(family, input_image, 0.0))

    assert sigmas_seen == []
    assert torch.equal(out["capture_output"]["samples"], out["capture_input"]["samples"])


SamplerBuilder = Callable[[Prompt, str, list[Any]], list[Any]]


def with_ksampler(prompt: Prompt, family: str, latent: list[Any]) -> list[Any]:
    prompt["sample"] = ksampler(family, latent, 1.0)
    return ["sample", 0]


def with_ksampler_advanced(prompt: Prompt, family: str, latent: list[Any]) -> list[Any]:
    inputs = dict(ksampler(family, latent, 1.0)["inputs"])
    seed = inputs.pop("seed")
    del inputs["denoise"]
    prompt["sample"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            **inputs,
            "add_noise": "enable",
            "noise_seed": seed,
            "start_at_step": 1,
            "end_at_step": 10000,
            "return_with_leftover_noise": "disable",
        },
    }
    return ["sample", 0]


def _custom_parts(prompt: Prompt, family: str, denoise: float) -> None:
    prompt["sampler"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}}
    prompt["sigmas"] = {
        "class_type": "BasicScheduler",
        "inputs": {"model": FAMILIES[family]["model"], "scheduler": "simple", "steps": 4, "denoise": denoise},
    }


def with_sampler_custom(prompt: Prompt, family: str, latent: list[Any]) -> list[Any]:
    _custom_parts(prompt, family, 0.8)
    prompt["sample"] = {
        "class_type": "SamplerCustom",
        "inputs": {
            "model": FAMILIES[family]["model"],
            "add_noise": True,
            "noise_seed": 7,
            "cfg": 2.0,
            "positive": ["text", 0],
            "negative": ["text", 0],
            "sampler": ["sampler", 0],
            "sigmas": ["sigmas", 0],
            "latent_image": latent,
        },
    }
    return ["sample", 0]


def _advanced(prompt: Prompt, latent: list[Any]) -> list[Any]:
    prompt["noise"] = {"class_type": "RandomNoise", "inputs": {"noise_seed": 7}}
    prompt["sample"] = {
        "class_type": "SamplerCustomAdvanced",
        "inputs": {
            "noise": ["noise", 0],
            "guider": ["guider", 0],
            "sampler": ["sampler", 0],
            "sigmas": ["sigmas", 0],
            "latent_image": latent,
        },
    }
    return ["sample", 0]


def with_basic_guider(prompt: Prompt, family: str, latent: list[Any]) -> list[Any]:
    _custom_parts(prompt, family, 1.0)
    prompt["guider"] = {
        "class_type": "BasicGuider",
        "inputs": {"model": FAMILIES[family]["model"], "conditioning": ["text", 0]},
    }
    return _advanced(prompt, latent)


def with_cfg_guider(prompt: Prompt, family: str, latent: list[Any]) -> list[Any]:
    _custom_parts(prompt, family, 1.0)
    prompt["guider"] = {
        "class_type": "CFGGuider",
        "inputs": {
            "model": FAMILIES[family]["model"],
            "positive": ["text", 0],
            "negative": ["text", 0],
            "cfg": 3.0,
        },
    }
    return _advanced(prompt, latent)


SAMPLER_PATHS: dict[str, SamplerBuilder] = {
    "KSampler": with_ksampler,
    "KSamplerAdvanced": with_ksampler_advanced,
    "SamplerCustom": with_sampler_custom,
    "SamplerCustomAdvanced+BasicGuider": with_basic_guider,
    "SamplerCustomAdvanced+CFGGuider": with_cfg_guider,
}


def assert_only_the_hole_changed(before: torch.Tensor, after: torch.Tensor) -> None:
    outside = torch.ones(before.shape[-2:], dtype=torch.bool)
    outside[HOLE_CELLS, HOLE_CELLS] = False
    assert torch.equal(after[..., outside], before[..., outside])
    assert not torch.allclose(after[..., HOLE_CELLS, HOLE_CELLS], before[..., HOLE_CELLS, HOLE_CELLS])


@pytest.mark.parametrize("path", SAMPLER_PATHS)
@pytest.mark.parametrize("family", FAMILIES)
def test_set_latent_noise_mask_keeps_every_unmasked_latent_cell_bit_for_bit(
    family: str, path: str, registry: NodeRegistry, manager: ModelManager, input_image: str
) -> None:
    prompt = graph(family, input_image)
    vae = FAMILIES[family]["vae"]
    prompt["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": vae}}
    prompt["masked"] = {
        "class_type": "SetLatentNoiseMask",
        "inputs": {"samples": ["encode", 0], "mask": ["image", 1]},
    }
    sampled = SAMPLER_PATHS[path](prompt, family, ["masked", 0])
    capture(prompt, "input", ["encode", 0])
    capture(prompt, "output", sampled)

    out = run(registry, manager, prompt)

    assert_only_the_hole_changed(out["capture_input"]["samples"], out["capture_output"]["samples"])


@pytest.mark.parametrize("family", FAMILIES)
def test_vae_encode_for_inpaint_keeps_the_unmasked_cells_and_decodes_near_the_input_there(
    family: str, registry: NodeRegistry, manager: ModelManager, input_image: str
) -> None:
    prompt = graph(family, input_image)
    vae = FAMILIES[family]["vae"]
    prompt["encode"] = {
        "class_type": "VAEEncodeForInpaint",
        "inputs": {"pixels": ["image", 0], "vae": vae, "mask": ["image", 1], "grow_mask_by": 0},
    }
    prompt["sample"] = ksampler(family, ["encode", 0], 1.0)
    prompt["decode_in"] = {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": vae}}
    prompt["decode_out"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}}
    for name, source in (
        ("input", "encode"),
        ("output", "sample"),
        ("in", "decode_in"),
        ("out", "decode_out"),
    ):
        capture(prompt, name, [source, 0])

    out = run(registry, manager, prompt)

    assert_only_the_hole_changed(out["capture_input"]["samples"], out["capture_output"]["samples"])
    before, after = out["capture_in"], out["capture_out"]
    corner = (slice(None), slice(0, 8), slice(0, 8))
    assert (after[corner] - before[corner]).abs().mean() < PIXEL_TOLERANCE
    assert (after[:, HOLE, HOLE] - before[:, HOLE, HOLE]).abs().mean() > (
        after[corner] - before[corner]
    ).abs().mean()


PIXEL_TOLERANCE = 0.25
"""Mean absolute difference (pixels in 0..1) allowed away from the hole after decoding: the tiny
random decoder mixes latent cells far across the image, so pixel space is close, not exact."""


@pytest.mark.parametrize("family", FAMILIES)
def test_outpaint_gives_the_padded_size_and_keeps_the_original_region(
    family: str, registry: NodeRegistry, manager: ModelManager, dirs: folders.FolderSettings
) -> None:
    Image.new("RGB", (SIZE, SIZE), (200, 120, 40)).save(dirs.input_dir / "plain.png")
    prompt = graph(family, "plain.png")
    vae = FAMILIES[family]["vae"]
    prompt["pad"] = {
        "class_type": "ImagePadForOutpaint",
        "inputs": {"image": ["image", 0], "left": 32, "top": 0, "right": 32, "bottom": 16, "feathering": 0},
    }
    prompt["encode"] = {
        "class_type": "VAEEncodeForInpaint",
        "inputs": {"pixels": ["pad", 0], "vae": vae, "mask": ["pad", 1], "grow_mask_by": 0},
    }
    prompt["sample"] = ksampler(family, ["encode", 0], 1.0)
    prompt["decode"] = {"class_type": "VAEDecode", "inputs": {"samples": ["sample", 0], "vae": vae}}
    prompt["decode_in"] = {"class_type": "VAEDecode", "inputs": {"samples": ["encode", 0], "vae": vae}}
    for name, source in (("input", "encode"), ("output", "sample"), ("image", "decode"), ("in", "decode_in")):
        capture(prompt, name, [source, 0])

    out = run(registry, manager, prompt)

    assert out["capture_image"].shape == (1, SIZE + 16, SIZE + 64, 3)
    before, after = out["capture_input"]["samples"], out["capture_output"]["samples"]
    original = (..., slice(0, 8), slice(4, 12))
    assert torch.equal(after[original], before[original])
    assert not torch.equal(after[..., :, :4], before[..., :, :4])
    change = (out["capture_image"] - out["capture_in"]).abs().mean(dim=(0, 3))
    assert change[:SIZE, 32 : 32 + SIZE].mean() < change[:, :32].mean()


@pytest.mark.parametrize("family", FAMILIES)
def test_differential_diffusion_changes_how_a_soft_mask_is_sampled_but_never_cells_at_zero(
    family: str, registry: NodeRegistry, manager: ModelManager, input_image: str
) -> None:
    """A soft mask (0.5 on the hole): with DifferentialDiffusion each step thresholds it (the hole is
    sampled only in the second half of the run), so the result differs from sampling with the soft
    mask as given; cells where it is 0 stay the input's either way."""
    outputs = []
    for differential in (False, True):
        prompt = graph(family, input_image)
        vae = FAMILIES[family]["vae"]
        model = FAMILIES[family]["model"]
        if differential:
            prompt["dd"] = {
                "class_type": "DifferentialDiffusion",
                "inputs": {"model": model, "strength": 1.0},
            }
            model = ["dd", 0]
        prompt["half"] = {"class_type": "SolidMask", "inputs": {"value": 0.5, "width": SIZE, "height": SIZE}}
        prompt["soft"] = {
            "class_type": "MaskComposite",
            "inputs": {
                "destination": ["image", 1],
                "source": ["half", 0],
                "x": 0,
                "y": 0,
                "operation": "multiply",
            },
        }
        prompt["encode"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["image", 0], "vae": vae}}
        prompt["masked"] = {
            "class_type": "SetLatentNoiseMask",
            "inputs": {"samples": ["encode", 0], "mask": ["soft", 0]},
        }
        prompt["sample"] = ksampler(family, ["masked", 0], 1.0, model=model)
        capture(prompt, "input", ["encode", 0])
        capture(prompt, "output", ["sample", 0])
        out = run(registry, manager, prompt)
        outputs.append(out["capture_output"]["samples"])
        assert_only_the_hole_changed(out["capture_input"]["samples"], out["capture_output"]["samples"])
    plain, differential_result = outputs
    assert not torch.equal(plain, differential_result)
