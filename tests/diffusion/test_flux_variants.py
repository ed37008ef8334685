"""Flux Fill, Canny/Depth and Kontext: told apart by their files' img_in, given the inputs their weights
read (checked against diffusers' FluxFillPipeline, BFL's formulas and ComfyUI's placement of reference
tokens), and run end to end through graphs on the tiny test models."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux_fill import FluxFillPipeline

from engine import folders
from engine.diffusion import flux
from engine.diffusion.detect import identify
from engine.diffusion.flux import FluxConfig
from engine.diffusion.loading import load_diffusion_model
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import load_tensors
from engine.diffusion.sampling.guiders import BasicGuider
from engine.diffusion.sampling.model_sampling import DiscreteFlow
from engine.graph.execute import Executor
from engine.graph.validate import validate_prompt
from engine.nodes import create_registry
from engine.nodes.edit_models import (
    FluxKontextImageScale,
    FluxKontextMultiReferenceLatentMethod,
    ReferenceLatent,
)

BFL_SCALE, BFL_SHIFT = 0.3611, 0.1159
"""BFL's AutoEncoderParams for Flux's VAE: model-space latent = (z - shift) * scale."""


def config_of(test_models_dir: Path, name: str) -> FluxConfig:
    part = identify(test_models_dir / "diffusion_models" / name).diffusion_model
    assert part is not None
    assert isinstance(part.config, FluxConfig)
    return part.config


@pytest.mark.parametrize(
    ("name", "variant", "in_channels"),
    [
        ("flux1-fill-dev.safetensors", "Flux Fill", 384),
        ("flux1-canny-dev.safetensors", "Flux Canny/Depth", 128),
        ("flux1-kontext-dev.safetensors", "Flux dev", 64),
        ("flux1-dev.safetensors", "Flux dev", 64),
    ],
)
def test_each_variant_is_recognised_from_its_img_in(
    test_models_dir: Path, name: str, variant: str, in_channels: int
) -> None:
    config = config_of(test_models_dir, name)
    assert (config.name, config.in_channels, config.out_channels) == (variant, in_channels, 64)


def test_the_fill_input_is_diffusers_fill_pipelines_masked_image_and_mask(test_models_dir: Path) -> None:
    config = config_of(test_models_dir, "flux1-fill-dev.safetensors")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 6, 4, generator=generator)
    masked_image = torch.randn(2, 16, 6, 4, generator=generator)
    mask = (torch.rand(2, 1, 48, 32, generator=generator) > 0.5).float()
    inputs = ModelInputs(torch.zeros(2, 1, 32), concat_image=masked_image, concat_mask=mask)

    tokens = flux.pack(flux.model_input(config, x, inputs))

    stub = SimpleNamespace(
        vae=SimpleNamespace(config=SimpleNamespace(shift_factor=BFL_SHIFT, scaling_factor=BFL_SCALE)),
        vae_scale_factor=8,
        _pack_latents=FluxFillPipeline._pack_latents,
    )
    mask_tokens, image_tokens = FluxFillPipeline.prepare_mask_latents(
        stub, mask, masked_image, 2, 16, 1, 48, 32, torch.float32, torch.device("cpu"), None
    )
    assert tokens.shape == (2, 6, 384)
    torch.testing.assert_close(tokens[..., :64], FluxFillPipeline._pack_latents(x, 2, 16, 6, 4))
    torch.testing.assert_close(tokens[..., 64:128], image_tokens)
    torch.testing.assert_close(tokens[..., 128:], mask_tokens)


def test_the_canny_input_is_the_latent_then_the_control_images_latent(test_models_dir: Path) -> None:
    config = config_of(test_models_dir, "flux1-canny-dev.safetensors")
    x, image = torch.randn(1, 16, 4, 6), torch.randn(1, 16, 4, 6)
    tokens = flux.pack(flux.model_input(config, x, ModelInputs(torch.zeros(1, 1, 32), concat_image=image)))
    # BFL's CannyImageEncoder path: img = cat(img, pack(ae.encode(control)), dim=-1).
    torch.testing.assert_close(
        tokens, torch.cat([flux.pack(x), flux.pack((image - BFL_SHIFT) * BFL_SCALE)], -1)
    )


def test_without_a_control_image_canny_reads_a_zero_vae_latent(test_models_dir: Path) -> None:
    config = config_of(test_models_dir, "flux1-canny-dev.safetensors")
    x = torch.randn(1, 16, 4, 4)
    assembled = flux.model_input(config, x, ModelInputs(torch.zeros(1, 1, 32)))
    torch.testing.assert_close(assembled[:, 16:], torch.full_like(x, (0 - BFL_SHIFT) * BFL_SCALE))


class Spy:
    """Records what the transformer is called with."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.calls.append(kwargs)


def _forward(
    manager: ModelManager, test_models_dir: Path, name: str, x: torch.Tensor, inputs: ModelInputs
) -> tuple[torch.Tensor, dict[str, Any]]:
    model = load_diffusion_model(test_models_dir / "diffusion_models" / name, manager=manager)
    spy = Spy()
    handle = model.module().register_forward_pre_hook(spy, with_kwargs=True)
    try:
        out = model.apply_model(x, torch.full((x.shape[0],), 0.7), inputs)
    finally:
        handle.remove()
    (call,) = spy.calls
    return out, call


@pytest.mark.parametrize("name", ["flux1-fill-dev.safetensors", "flux1-canny-dev.safetensors"])
def test_fill_and_canny_forwards_return_the_latents_shape(
    manager: ModelManager, test_models_dir: Path, name: str
) -> None:
    x = torch.randn(1, 16, 5, 7)
    inputs = ModelInputs(torch.randn(1, 3, 32), torch.randn(1, 64), concat_image=torch.randn(1, 16, 5, 7))
    out, call = _forward(manager, test_models_dir, name, x, inputs)
    assert out.shape == x.shape
    expected = 384 if "fill" in name else 128
    assert call["hidden_states"].shape == (1, 3 * 4, expected)


def test_kontext_appends_reference_tokens_at_index_1_and_returns_the_images_tokens_only(
    manager: ModelManager, test_models_dir: Path
) -> None:
    x = torch.randn(1, 16, 4, 6)
    first, second = torch.randn(1, 16, 6, 4), torch.randn(1, 16, 4, 4)
    text = torch.randn(1, 3, 32), torch.randn(1, 64)
    inputs = ModelInputs(*text, reference_latents=(first, second))
    out, call = _forward(manager, test_models_dir, "flux1-kontext-dev.safetensors", x, inputs)
    plain, _ = _forward(manager, test_models_dir, "flux1-kontext-dev.safetensors", x, ModelInputs(*text))

    assert out.shape == x.shape
    assert not torch.allclose(out, plain), "the references must reach the image's tokens"
    n_image, n_first, n_second = 2 * 3, 3 * 2, 2 * 2
    assert call["hidden_states"].shape == (1, n_image + n_first + n_second, 64)
    ids = call["img_ids"]
    assert ids[:n_image, 0].eq(0).all()
    # ComfyUI's "offset": the first (taller) reference at the origin; the second beside it, 4 latent cells
    # (2 tokens) to the right, as the references so far are taller than wide.
    expected_first = flux.image_ids(3, 2, torch.device("cpu"), index=1)
    expected_second = flux.image_ids(2, 2, torch.device("cpu"), index=1, left=2)
    torch.testing.assert_close(ids[n_image:], torch.cat([expected_first, expected_second]))


@pytest.mark.parametrize(
    ("method", "indices", "tops", "lefts"),
    [("index", (1, 2), (0, 0), (0, 0)), ("uxo", (0, 0), (2, 5), (3, 5))],
)
def test_the_other_reference_methods_place_references_as_comfyui_does(
    method: str, indices: tuple[int, int], tops: tuple[int, int], lefts: tuple[int, int]
) -> None:
    """ "uxo": past the image's bottom-right corner (4x6 cells = 2x3 tokens), then past the first reference
    too (6x4 cells: rounded half-up, (4 + 6 + 1) // 2 = 5 and (6 + 4 + 1) // 2 = 5)."""
    config = FluxConfig(in_channels=64, out_channels=64)
    refs = (torch.randn(1, 16, 6, 4), torch.randn(1, 16, 4, 4))
    found = flux.reference_tokens(
        config,
        torch.zeros(1, 16, 4, 6),
        ModelInputs(torch.zeros(1, 1, 8), reference_latents=refs, reference_method=method),
    )
    assert found is not None
    ids = found[1]
    cpu = torch.device("cpu")
    expected = torch.cat(
        [
            flux.image_ids(3, 2, cpu, indices[0], tops[0], lefts[0]),
            flux.image_ids(2, 2, cpu, indices[1], tops[1], lefts[1]),
        ]
    )
    torch.testing.assert_close(ids, expected)


def test_reference_latents_and_their_method_reach_the_model_through_the_conditioning() -> None:
    latent = torch.randn(1, 16, 4, 4)
    (conditioning,) = ReferenceLatent().append([[torch.zeros(1, 2, 8), {}]], {"samples": latent})
    (conditioning,) = ReferenceLatent().append(conditioning, {"samples": 2 * latent})
    (conditioning,) = FluxKontextMultiReferenceLatentMethod().append(conditioning, "uxo/uno")
    assert ReferenceLatent().append(conditioning, None) == (conditioning,)

    inputs = _seen_inputs(conditioning, (2, 16, 4, 4))
    assert inputs.reference_method == "uxo"
    assert [r.shape for r in inputs.reference_latents] == [(2, 16, 4, 4)] * 2
    torch.testing.assert_close(inputs.reference_latents[1], 2 * latent.expand(2, -1, -1, -1))


def test_an_unknown_reference_method_is_refused_by_name() -> None:
    conditioning = [[torch.zeros(1, 2, 8), {"reference_latents_method": "sideways"}]]
    model = SimpleNamespace(model_sampling=SimpleNamespace(), device=torch.device("cpu"))
    with pytest.raises(ValueError, match="sideways"):
        BasicGuider(model, conditioning).denoiser((1, 16, 4, 4), keep_uncond=False)  # type: ignore[arg-type]


def _kontext_module(test_models_dir: Path) -> tuple[FluxConfig, torch.nn.Module]:
    config = config_of(test_models_dir, "flux1-kontext-dev.safetensors")
    module = config.create_module()
    weights = load_tensors(test_models_dir / "diffusion_models" / "flux1-kontext-dev.safetensors")
    module.load_state_dict(config.to_diffusers({k: t.float() for k, t in weights.items()}))
    return config, module.eval()


TZ_X = torch.randn(1, 16, 4, 6, generator=torch.Generator().manual_seed(11))
TZ_REFS = (torch.randn(1, 16, 6, 4, generator=torch.Generator().manual_seed(12)),)
TZ_TEXT = (torch.randn(1, 3, 32), torch.randn(1, 64))


def _predict(config: FluxConfig, module: torch.nn.Module, method: str, sigma: float) -> torch.Tensor:
    inputs = ModelInputs(*TZ_TEXT, reference_latents=TZ_REFS, reference_method=method)
    with torch.no_grad():
        return flux.predict(module, config, TZ_X, torch.tensor([sigma]), inputs)  # type: ignore[arg-type]


def test_index_timestep_zero_at_timestep_zero_is_diffusers_own_forward_with_index_placement(
    test_models_dir: Path,
) -> None:
    """At timestep 0 both embeddings are the same, so the per-token forward must be diffusers' module's."""
    config, module = _kontext_module(test_models_dir)
    torch.testing.assert_close(
        _predict(config, module, "index_timestep_zero", 0.0), _predict(config, module, "index", 0.0)
    )
    assert not torch.allclose(
        _predict(config, module, "index_timestep_zero", 0.6), _predict(config, module, "index", 0.6)
    ), "at another timestep the references' modulation differs"


def test_index_timestep_zero_modulates_the_references_with_timestep_zeros_embedding(
    test_models_dir: Path,
) -> None:
    """Each image-stream modulation layer reads the step's embedding for the image's tokens and the
    embedding of timestep 0 (same guidance and pooled text) for the references' (ComfyUI's
    timestep_zero_index); the text stream reads only the step's."""
    config, module = _kontext_module(test_models_dir)
    block = module.transformer_blocks[0]
    seen: list[torch.Tensor] = []
    embedded: list[torch.Tensor] = []
    attended: list[torch.Tensor] = []
    hooks = [
        block.norm1.linear.register_forward_pre_hook(lambda _, args: seen.append(args[0])),
        module.x_embedder.register_forward_hook(lambda _, __, out: embedded.append(out)),
        block.attn.register_forward_pre_hook(
            lambda _, __, kwargs: attended.append(kwargs["hidden_states"]), with_kwargs=True
        ),
    ]
    try:
        _predict(config, module, "index_timestep_zero", 0.6)
    finally:
        for hook in hooks:
            hook.remove()
    guidance = torch.full((1,), flux.DEFAULT_GUIDANCE * 1000)
    with torch.no_grad():
        step = module.time_text_embed(torch.tensor([600.0]), guidance, TZ_TEXT[1])
        zero = module.time_text_embed(torch.tensor([0.0]), guidance, TZ_TEXT[1])
        silu = torch.nn.functional.silu
        torch.testing.assert_close(seen, [silu(step), silu(zero)])
        # The first block's attention reads LayerNorm(x) * (1 + scale) + shift, the step's (shift, scale)
        # for the image's 2 x 3 tokens and timestep 0's for the reference's 3 x 2.
        (image,) = embedded
        normed = torch.nn.functional.layer_norm(image, (image.shape[-1],), eps=1e-6)
        shift_step, scale_step = block.norm1.linear(silu(step)).chunk(6, dim=-1)[:2]
        shift_zero, scale_zero = block.norm1.linear(silu(zero)).chunk(6, dim=-1)[:2]
        expected = torch.cat(
            [
                normed[:, :6] * (1 + scale_step[:, None]) + shift_step[:, None],
                normed[:, 6:] * (1 + scale_zero[:, None]) + shift_zero[:, None],
            ],
            dim=1,
        )
    assert image.shape[1] == 6 + 6
    torch.testing.assert_close(attended[0], expected)


def test_index_timestep_zero_places_references_as_index_does() -> None:
    config = FluxConfig(in_channels=64, out_channels=64)
    refs = (torch.randn(1, 16, 6, 4), torch.randn(1, 16, 4, 4))
    placed = {
        method: flux.reference_tokens(
            config,
            torch.zeros(1, 16, 4, 6),
            ModelInputs(torch.zeros(1, 1, 8), reference_latents=refs, reference_method=method),
        )
        for method in ("index", "index_timestep_zero")
    }
    assert placed["index"] is not None and placed["index_timestep_zero"] is not None
    torch.testing.assert_close(placed["index_timestep_zero"][1], placed["index"][1])


def test_the_node_passes_index_timestep_zero_on_to_the_model() -> None:
    (conditioning,) = FluxKontextMultiReferenceLatentMethod().append(
        [[torch.zeros(1, 2, 8), {}]], "index_timestep_zero"
    )
    assert _seen_inputs(conditioning, (1, 16, 4, 4)).reference_method == "index_timestep_zero"


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(600, 300, (1456, 720)), (512, 512, (1024, 1024)), (300, 700, (672, 1568)), (800, 1000, (944, 1104))],
)
def test_flux_kontext_image_scale_picks_the_preferred_size_of_nearest_aspect(
    width: int, height: int, expected: tuple[int, int]
) -> None:
    """Closed form: argmin |w/h - W/H| over BFL's list (2.0 -> 1456/720 = 2.022, not 1504/688 = 2.186;
    0.8 -> 944/1104 = 0.855, not 880/1184 = 0.743)."""
    (scaled,) = FluxKontextImageScale().scale(torch.rand(1, height, width, 3))
    assert (scaled.shape[2], scaled.shape[1]) == expected
    assert scaled.shape[-1] == 3


def _graph(
    unet: str, middle: dict[str, Any], positive: list[Any], negative: list[Any], latent: list[Any]
) -> dict[str, Any]:
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "t5xxl_fp16.safetensors",
                "clip_name2": "clip_l.safetensors",
                "type": "flux",
            },
        },
        "3": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red door", "clip": ["2", 0]}},
        "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["2", 0]}},
        "6": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 48, "batch_size": 1, "color": 0x336699},
        },
        **middle,
        "20": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 1,
                "steps": 2,
                "cfg": 1.0,
                "sampler_name": "euler",
                "scheduler": "simple",
                "denoise": 1.0,
                "model": ["1", 0],
                "positive": positive,
                "negative": negative,
                "latent_image": latent,
            },
        },
        "21": {"class_type": "VAEDecode", "inputs": {"samples": ["20", 0], "vae": ["3", 0]}},
        "22": {"class_type": "PreviewImage", "inputs": {"images": ["21", 0]}},
    }


GRAPHS = {
    "fill inpaint": _graph(
        "flux1-fill-dev.safetensors",
        {
            "7": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 64, "height": 48}},
            "8": {
                "class_type": "InpaintModelConditioning",
                "inputs": {
                    "positive": ["4", 0],
                    "negative": ["5", 0],
                    "vae": ["3", 0],
                    "pixels": ["6", 0],
                    "mask": ["7", 0],
                    "noise_mask": True,
                },
            },
        },
        ["8", 0],
        ["8", 1],
        ["8", 2],
    ),
    "canny": _graph(
        "flux1-canny-dev.safetensors",
        {
            "8": {
                "class_type": "InstructPixToPixConditioning",
                "inputs": {"positive": ["4", 0], "negative": ["5", 0], "vae": ["3", 0], "pixels": ["6", 0]},
            }
        },
        ["8", 0],
        ["8", 1],
        ["8", 2],
    ),
    "kontext edit": _graph(
        "flux1-kontext-dev.safetensors",
        {
            "7": {"class_type": "FluxKontextImageScale", "inputs": {"image": ["6", 0]}},
            "8": {"class_type": "VAEEncode", "inputs": {"pixels": ["6", 0], "vae": ["3", 0]}},
            "9": {"class_type": "ReferenceLatent", "inputs": {"conditioning": ["4", 0], "latent": ["8", 0]}},
            "10": {
                "class_type": "EmptySD3LatentImage",
                "inputs": {"width": 64, "height": 48, "batch_size": 1},
            },
        },
        ["9", 0],
        ["5", 0],
        ["10", 0],
    ),
}


@pytest.mark.parametrize("name", GRAPHS)
def test_each_variant_runs_its_graph_end_to_end(
    name: str, dirs: folders.FolderSettings, manager: ModelManager
) -> None:
    """A Fill or Canny model given only the latent would fail at img_in (384 or 128 wide, not 64)."""
    registry = create_registry()[0]
    validation = validate_prompt(registry, GRAPHS[name])
    assert validation.validated is not None, validation
    result = Executor(registry, resources={"models": manager}).run(validation.validated, prompt_id=name)
    assert result.status == "success", result.failure
    (output,) = result.outputs.values()
    (image,) = output["images"]
    assert image["type"] == "temp"


def _seen_inputs(
    conditioning: list[Any], shape: tuple[int, ...], denoise_mask: torch.Tensor | None = None
) -> ModelInputs:
    seen: list[ModelInputs] = []

    class Model:
        model_sampling = DiscreteFlow(1.0)
        device = torch.device("cpu")

        def apply_model(self, x: torch.Tensor, sigma: torch.Tensor, inputs: ModelInputs) -> torch.Tensor:
            seen.append(inputs)
            return torch.zeros_like(x)

    guider = BasicGuider(Model(), conditioning)  # type: ignore[arg-type]
    guider.denoiser(shape, False, denoise_mask)(torch.zeros(shape), torch.full((shape[0],), 0.5))
    (inputs,) = seen
    return inputs


def test_the_concat_image_and_mask_are_cut_to_an_entrys_area() -> None:
    """ConditioningSetArea's (h, w, y, x) = (2, 3, 1, 2) cells: the image's cells, and the mask's pixels
    8x those, as ComfyUI crops noise-shaped conds to the area."""
    image = torch.arange(16 * 4 * 6, dtype=torch.float32).reshape(1, 16, 4, 6)
    mask = torch.rand(1, 1, 32, 48)
    options = {"concat_latent_image": image, "concat_mask": mask, "area": (2, 3, 1, 2)}
    inputs = _seen_inputs([[torch.zeros(1, 2, 8), options]], (1, 16, 4, 6))
    assert inputs.concat_image is not None and inputs.concat_mask is not None
    torch.testing.assert_close(inputs.concat_image, image[..., 1:3, 2:5])
    torch.testing.assert_close(inputs.concat_mask, mask[..., 8:24, 16:40])


def test_without_a_concat_mask_the_noise_mask_is_read_at_8x_and_a_smaller_image_is_fitted() -> None:
    """ComfyUI's fallbacks: the sampler's noise mask (channel mean, bilinear to pixel size) and the image
    resized bilinearly to the latent (centre crop first: 4x8 cut to 4x4 from column 2)."""
    noise_mask = torch.zeros(1, 16, 2, 2)
    noise_mask[..., 0, 1] = 1.0
    image = torch.randn(1, 16, 4, 8)
    inputs = _seen_inputs([[torch.zeros(1, 2, 8), {"concat_latent_image": image}]], (1, 16, 2, 2), noise_mask)
    assert inputs.concat_mask is not None and inputs.concat_image is not None
    expected = torch.nn.functional.interpolate(noise_mask[:, :1], size=(16, 16), mode="bilinear")
    torch.testing.assert_close(inputs.concat_mask, expected)
    expected_image = torch.nn.functional.interpolate(image[..., 2:6], size=(2, 2), mode="bilinear")
    torch.testing.assert_close(inputs.concat_image, expected_image)
