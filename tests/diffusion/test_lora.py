"""LoraLoader and LoraLoaderModelOnly on the tiny test models: each key format lands on the right weights
with ComfyUI's arithmetic, stacks, and is undone for runs that do not ask for it.

Expected weights are computed in closed form from the test model files and the LoRA tensors
(W' = W + strength · alpha/rank · up @ down, in float32 on the CPU, so exactly), with the original
layouts' rows placed as BFL's and fal's layouts define them (Flux's qkv is q, k, v stacked; a single
block's linear1 is q, k, v, MLP; the final modulation is (shift, scale) where diffusers has (scale, shift)).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from diffusers.loaders.lora_conversion_utils import _convert_kohya_flux_lora_to_diffusers

from engine import folders
from engine.diffusion import auraflow, flux
from engine.diffusion.diffusion_model import LoadedDiffusionModel
from engine.diffusion.flux import FluxConfig
from engine.diffusion.lora.adapters import LoRA, read_layers, take_rows
from engine.diffusion.lora.patches import patched
from engine.diffusion.lora.targets import diffusion_model_targets
from engine.diffusion.model_manager import ModelManager
from engine.diffusion.protocols import ModelInputs
from engine.diffusion.safetensors_file import WeightsFileError, load_tensors
from engine.diffusion.test_models import TINY_AURAFLOW, TINY_FLUX_SCHNELL
from engine.diffusion.text_encoders import CLIP, text_encoder_layout
from engine.graph.cache import estimate_nbytes
from engine.graph.execute import Executor
from engine.graph.registry import NodeRegistry
from engine.graph.validate import validate_prompt
from engine.nodes import conditioning, latent, loaders, sampling, text_encoders
from engine.nodes.loaders import CheckpointLoaderSimple, LoraLoader, LoraLoaderModelOnly, UNETLoader
from engine.nodes.text_encoders import DualCLIPLoader
from tests.diffusion.lora_files import lora_tensors, write_lora, xlabs_flux_tensors

pytestmark = pytest.mark.usefixtures("dirs", "manager")

H = TINY_FLUX_SCHNELL.hidden_size
M = TINY_FLUX_SCHNELL.mlp_hidden
FLUX_LAYOUT = flux.layout(TINY_FLUX_SCHNELL)
AURA_LAYOUT = auraflow.layout(TINY_AURAFLOW)


@pytest.fixture
def loras(dirs: folders.FolderSettings, tmp_path: Path) -> Iterator[Path]:
    """A loras folder of the test's own (the shared test models stay as written)."""
    directory = tmp_path / "loras"
    directory.mkdir()
    folders.use(dataclasses.replace(dirs, model_paths={**dirs.model_paths, "loras": (directory,)}))
    yield directory


def file_weights(models: Path, name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's weights as stored, in float32 (what the fp32 CPU manager computes with)."""
    return {key: t.float() for key, t in load_tensors(models / name, prefix).items()}


def flux_schnell(manager: ModelManager) -> LoadedDiffusionModel:
    return UNETLoader(manager).load_unet("flux1-schnell.safetensors", "default")[0]


def flux_clip(manager: ModelManager) -> CLIP:
    return DualCLIPLoader(manager).load_clip("t5xxl_fp16.safetensors", "clip_l.safetensors", "flux")[0]


def weights_of(module: torch.nn.Module, view_patches: tuple[Any, ...]) -> dict[str, torch.Tensor]:
    """The module's parameters as a view with these patches runs with them (copied out)."""
    with patched(module, view_patches):
        return {name: p.detach().clone() for name, p in module.named_parameters()}


def up_down(
    tensors: dict[str, torch.Tensor], base: str, up: str = ".lora_up.weight", down: str = ".lora_down.weight"
) -> tuple[torch.Tensor, torch.Tensor]:
    return tensors[base + up].float(), tensors[base + down].float()


X = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
SIGMA = torch.tensor([0.6])
FLUX_INPUTS = ModelInputs(
    torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(2)),
    torch.randn(1, 64, generator=torch.Generator().manual_seed(3)),
)

KOHYA_LAYERS = {
    "lora_unet_double_blocks_0_img_mlp_0": FLUX_LAYOUT["double_blocks.0.img_mlp.0.weight"],
    "lora_unet_double_blocks_0_img_attn_qkv": FLUX_LAYOUT["double_blocks.0.img_attn.qkv.weight"],
    "lora_unet_single_blocks_1_linear1": FLUX_LAYOUT["single_blocks.1.linear1.weight"],
    "lora_unet_final_layer_adaLN_modulation_1": FLUX_LAYOUT["final_layer.adaLN_modulation.1.weight"],
}


def test_a_kohya_flux_lora_adds_scaled_up_down_to_each_weight_and_splits_fused_layers_by_rows(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    lora = lora_tensors(KOHYA_LAYERS, rank=4, alpha=8.0, seed=5)
    write_lora(loras, "kohya.safetensors", lora)
    (model,) = LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), "kohya.safetensors", 0.7)
    after = weights_of(model.module(), model.patches)
    w = file_weights(test_models_dir, "diffusion_models/flux1-schnell.safetensors")
    scale = 0.7 * (8.0 / 4)

    def expected(source: str, base: str, rows: slice | list[slice]) -> torch.Tensor:
        parts = rows if isinstance(rows, list) else [rows]
        weight = torch.cat([w[source][r] for r in parts])
        up, down = up_down(lora, base)
        return weight + scale * (torch.cat([up[r] for r in parts]) @ down)

    checks = {
        "transformer_blocks.0.ff.net.0.proj.weight": (
            "double_blocks.0.img_mlp.0.weight",
            "lora_unet_double_blocks_0_img_mlp_0",
            slice(None),
        ),
        "transformer_blocks.0.attn.to_q.weight": (
            "double_blocks.0.img_attn.qkv.weight",
            "lora_unet_double_blocks_0_img_attn_qkv",
            slice(0, H),
        ),
        "transformer_blocks.0.attn.to_k.weight": (
            "double_blocks.0.img_attn.qkv.weight",
            "lora_unet_double_blocks_0_img_attn_qkv",
            slice(H, 2 * H),
        ),
        "transformer_blocks.0.attn.to_v.weight": (
            "double_blocks.0.img_attn.qkv.weight",
            "lora_unet_double_blocks_0_img_attn_qkv",
            slice(2 * H, 3 * H),
        ),
        "single_transformer_blocks.1.attn.to_k.weight": (
            "single_blocks.1.linear1.weight",
            "lora_unet_single_blocks_1_linear1",
            slice(H, 2 * H),
        ),
        "single_transformer_blocks.1.proj_mlp.weight": (
            "single_blocks.1.linear1.weight",
            "lora_unet_single_blocks_1_linear1",
            slice(3 * H, 3 * H + M),
        ),
        "norm_out.linear.weight": (
            "final_layer.adaLN_modulation.1.weight",
            "lora_unet_final_layer_adaLN_modulation_1",
            [slice(H, 2 * H), slice(0, H)],
        ),
    }
    for param, (source, base, rows) in checks.items():
        assert torch.equal(after[param], expected(source, base, rows)), param
    untouched = "transformer_blocks.1.attn.to_q.weight"
    assert torch.equal(after[untouched], w["double_blocks.1.img_attn.qkv.weight"][:H])
    assert torch.equal(
        after["transformer_blocks.0.attn.to_q.bias"], w["double_blocks.0.img_attn.qkv.bias"][:H]
    )


def test_the_kohya_split_puts_the_rows_where_diffusers_converter_puts_them_at_full_size() -> None:
    """diffusers' converter only handles the full-size layout; there each diffusers layer must get the
    same rows of the kohya `up` factor from both (alpha/rank = 2 goes into `down` there, so `up` is as
    stored; the final layer's rows come swapped, and its alpha ignored, by the converter)."""
    full = FluxConfig()
    layout = flux.layout(full)
    names = {
        "lora_unet_double_blocks_3_txt_attn_qkv": "double_blocks.3.txt_attn.qkv.weight",
        "lora_unet_single_blocks_7_linear1": "single_blocks.7.linear1.weight",
        "lora_unet_double_blocks_0_img_mod_lin": "double_blocks.0.img_mod.lin.weight",
        "lora_unet_final_layer_adaLN_modulation_1": "final_layer.adaLN_modulation.1.weight",
    }
    lora = lora_tensors(
        {base: layout[name] for base, name in names.items()}, rank=3, alpha=6.0, dtype=torch.float32
    )
    targets = diffusion_model_targets(full)
    converted = _convert_kohya_flux_lora_to_diffusers(dict(lora))
    compared = []
    for base, adapter in read_layers(lora).weights.items():
        assert isinstance(adapter, LoRA)
        for placement in targets.weights[base].placements:
            module = placement.param.removesuffix(".weight")
            prefix = "" if module == "norm_out.linear" else "transformer."
            assert torch.equal(
                take_rows(adapter.up, placement.rows), converted[f"{prefix}{module}.lora_B.weight"]
            )
            if prefix:
                assert torch.equal(adapter.down * 2, converted[f"{prefix}{module}.lora_A.weight"])
            compared.append(module)
    assert len(compared) == 3 + 4 + 1 + 1
    assert "single_transformer_blocks.7.proj_mlp" in compared


def test_diffusers_peft_names_land_on_the_parameters_of_those_names(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    layers = {
        "transformer.transformer_blocks.1.attn.to_k": (H, H),
        "transformer.single_transformer_blocks.0.proj_out": (H, H + M),
    }
    lora = lora_tensors(layers, form="peft", rank=2, seed=6)
    write_lora(loras, "peft.safetensors", lora)
    (model,) = LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), "peft.safetensors", -1.5)
    after = weights_of(model.module(), model.patches)
    w = file_weights(test_models_dir, "diffusion_models/flux1-schnell.safetensors")

    up, down = up_down(lora, "transformer.transformer_blocks.1.attn.to_k", ".lora_B.weight", ".lora_A.weight")
    expected = w["double_blocks.1.img_attn.qkv.weight"][H : 2 * H] + -1.5 * (up @ down)
    assert torch.equal(after["transformer_blocks.1.attn.to_k.weight"], expected)
    up, down = up_down(
        lora, "transformer.single_transformer_blocks.0.proj_out", ".lora_B.weight", ".lora_A.weight"
    )
    assert torch.equal(
        after["single_transformer_blocks.0.proj_out.weight"],
        w["single_blocks.0.linear2.weight"] + -1.5 * (up @ down),
    )


def test_an_xlabs_flux_lora_goes_through_diffusers_converter_onto_q_k_v(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    lora = xlabs_flux_tensors(H, double_blocks=2, single_blocks=1, seed=7)
    write_lora(loras, "xlabs.safetensors", lora)
    (model,) = LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), "xlabs.safetensors", 1.0)
    after = weights_of(model.module(), model.patches)
    w = file_weights(test_models_dir, "diffusion_models/flux1-schnell.safetensors")

    def delta(module: str, rows: slice) -> torch.Tensor:
        up, down = up_down(lora, module, ".up.weight", ".down.weight")
        return 1.0 * (up[rows] @ down)

    qkv2 = "double_blocks.1.processor.qkv_lora2"
    assert torch.equal(
        after["transformer_blocks.1.attn.add_v_proj.weight"],
        w["double_blocks.1.txt_attn.qkv.weight"][2 * H :] + delta(qkv2, slice(2 * H, 3 * H)),
    )
    assert torch.equal(
        after["transformer_blocks.0.attn.to_out.0.weight"],
        w["double_blocks.0.img_attn.proj.weight"]
        + delta("double_blocks.0.processor.proj_lora1", slice(None)),
    )
    assert torch.equal(
        after["single_transformer_blocks.0.attn.to_q.weight"],
        w["single_blocks.0.linear1.weight"][:H] + delta("single_blocks.0.processor.qkv_lora", slice(0, H)),
    )
    assert len(model.patches) == 2 * (3 + 3 + 1 + 1) + 3


def test_loha_and_lokr_changes_follow_lycoris_arithmetic(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    loha = lora_tensors(
        {"lora_unet_double_blocks_1_txt_mlp_2": (H, M)}, form="loha", rank=3, alpha=1.5, seed=8
    )
    lokr = lora_tensors(
        {"lycoris_transformer_blocks_0_attn_to_add_out": (H, H)}, form="lokr", rank=2, alpha=4.0, seed=9
    )
    write_lora(loras, "loha.safetensors", loha)
    write_lora(loras, "lokr.safetensors", lokr)
    (model,) = LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), "loha.safetensors", 0.7)
    (model,) = LoraLoaderModelOnly().load_lora_model_only(model, "lokr.safetensors", 2.0)
    after = weights_of(model.module(), model.patches)
    w = file_weights(test_models_dir, "diffusion_models/flux1-schnell.safetensors")

    base = "lora_unet_double_blocks_1_txt_mlp_2"
    f = {part: loha[base + part].float() for part in (".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b")}
    hadamard = (f[".hada_w1_a"] @ f[".hada_w1_b"]) * (f[".hada_w2_a"] @ f[".hada_w2_b"])
    assert torch.equal(
        after["transformer_blocks.1.ff_context.net.2.weight"],
        w["double_blocks.1.txt_mlp.2.weight"] + (0.7 * (1.5 / 3)) * hadamard,
    )
    base = "lycoris_transformer_blocks_0_attn_to_add_out"
    w2 = lokr[base + ".lokr_w2_a"].float() @ lokr[base + ".lokr_w2_b"].float()
    kronecker = torch.kron(lokr[base + ".lokr_w1"].float(), w2)
    assert torch.equal(
        after["transformer_blocks.0.attn.to_add_out.weight"],
        w["double_blocks.0.txt_attn.proj.weight"] + (2.0 * (4.0 / 2)) * kronecker,
    )


def test_auraflow_takes_diffusers_names_and_comfyuis_native_names(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    d = TINY_AURAFLOW.dim
    layers = {
        "transformer.joint_transformer_blocks.0.attn.to_q": (d, d),
        "diffusion_model.double_layers.1.attn.w1q": AURA_LAYOUT["double_layers.1.attn.w1q.weight"],
        "diffusion_model.modF.1": AURA_LAYOUT["modF.1.weight"],
    }
    peft = lora_tensors(
        {k: v for k, v in layers.items() if k.startswith("transformer.")}, form="peft", seed=10
    )
    native = lora_tensors(
        {k: v for k, v in layers.items() if k.startswith("diffusion_model.")}, alpha=2.0, seed=11
    )
    model, clip, _ = CheckpointLoaderSimple(manager).load_checkpoint("aura_flow_0.3.safetensors")
    pile_q = "encoder.block.1.layer.0.SelfAttention.q"
    pile_layout = text_encoder_layout(clip.encoders["pile_t5xl"].spec)
    pile = lora_tensors(
        {f"text_encoders.pile_t5xl.transformer.{pile_q}": pile_layout[f"{pile_q}.weight"]}, seed=12
    )
    write_lora(loras, "aura.safetensors", {**peft, **native, **pile})
    patched_model, patched_clip = LoraLoader().load_lora(model, clip, "aura.safetensors", 0.8, 1.5)
    after = weights_of(patched_model.module(), patched_model.patches)
    w = file_weights(test_models_dir, "checkpoints/aura_flow_0.3.safetensors", "model.")

    up, down = up_down(
        peft, "transformer.joint_transformer_blocks.0.attn.to_q", ".lora_B.weight", ".lora_A.weight"
    )
    assert torch.equal(
        after["joint_transformer_blocks.0.attn.to_q.weight"],
        w["double_layers.0.attn.w2q.weight"] + 0.8 * (up @ down),
    )
    up, down = up_down(native, "diffusion_model.double_layers.1.attn.w1q")
    assert torch.equal(
        after["joint_transformer_blocks.1.attn.add_q_proj.weight"],
        w["double_layers.1.attn.w1q.weight"] + (0.8 * (2.0 / 4)) * (up @ down),
    )
    up, down = up_down(native, "diffusion_model.modF.1")
    shift_scale = w["modF.1.weight"]
    assert torch.equal(
        after["norm_out.linear.weight"],
        torch.cat([shift_scale[d:], shift_scale[:d]])
        + (0.8 * (2.0 / 4)) * (torch.cat([up[d:], up[:d]]) @ down),
    )
    encoder = patched_clip.encoders["pile_t5xl"]
    pile_after = weights_of(encoder._module(), encoder.patches)[f"{pile_q}.weight"]
    stored = file_weights(
        test_models_dir, "checkpoints/aura_flow_0.3.safetensors", "text_encoders.pile_t5xl.transformer."
    )
    up, down = up_down(pile, f"text_encoders.pile_t5xl.transformer.{pile_q}")
    assert torch.equal(pile_after, stored[f"{pile_q}.weight"] + 1.5 * (up @ down))


def test_text_encoder_layers_follow_strength_clip(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    clip_layout = text_encoder_layout(flux_clip(manager).encoders["l"].spec)
    t5_layout = text_encoder_layout(flux_clip(manager).encoders["t5xxl"].spec)
    te = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": clip_layout[
            "text_model.encoder.layers.0.self_attn.q_proj.weight"
        ],
        "lora_te2_encoder_block_1_layer_1_DenseReluDense_wo": t5_layout[
            "encoder.block.1.layer.1.DenseReluDense.wo.weight"
        ],
    }
    lora = lora_tensors(te, rank=2, alpha=1.0, seed=12)
    write_lora(loras, "te.safetensors", lora)
    clip = flux_clip(manager)
    model = flux_schnell(manager)
    before = conditioning.CLIPTextEncode().encode(clip, "a red cat")[0][0]

    patched_model, patched_clip = LoraLoader().load_lora(model, clip, "te.safetensors", 1.0, 3.0)
    assert patched_model.patches == ()
    clip_module = patched_clip.encoders["l"]._module()
    after = weights_of(clip_module, patched_clip.encoders["l"].patches)
    w = file_weights(test_models_dir, "text_encoders/clip_l.safetensors")
    up, down = up_down(lora, "lora_te1_text_model_encoder_layers_0_self_attn_q_proj")
    expected = w["text_model.encoder.layers.0.self_attn.q_proj.weight"] + (3.0 * (1.0 / 2)) * (up @ down)
    assert torch.equal(after["encoder.layers.0.self_attn.q_proj.weight"], expected)
    t5_after = weights_of(patched_clip.encoders["t5xxl"]._module(), patched_clip.encoders["t5xxl"].patches)
    w5 = file_weights(test_models_dir, "text_encoders/t5xxl_fp16.safetensors")
    up, down = up_down(lora, "lora_te2_encoder_block_1_layer_1_DenseReluDense_wo")
    expected = w5["encoder.block.1.layer.1.DenseReluDense.wo.weight"] + (3.0 * (1.0 / 2)) * (up @ down)
    assert torch.equal(t5_after["encoder.block.1.layer.1.DenseReluDense.wo.weight"], expected)

    cond, extras = conditioning.CLIPTextEncode().encode(patched_clip, "a red cat")[0][0]
    assert not torch.equal(cond, before[0]) and not torch.equal(
        extras["pooled_output"], before[1]["pooled_output"]
    )
    again = conditioning.CLIPTextEncode().encode(clip, "a red cat")[0][0]
    assert torch.equal(again[0], before[0]) and torch.equal(
        again[1]["pooled_output"], before[1]["pooled_output"]
    )
    _, unchanged_clip = LoraLoader().load_lora(model, clip, "te.safetensors", 1.0, 0.0)
    zero = conditioning.CLIPTextEncode().encode(unchanged_clip, "a red cat")[0][0]
    assert torch.equal(zero[0], before[0])


def test_strength_zero_leaves_the_output_identical_and_stacked_loras_add(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    layer = {"lora_unet_double_blocks_0_txt_mod_lin": FLUX_LAYOUT["double_blocks.0.txt_mod.lin.weight"]}
    first, second = lora_tensors(layer, alpha=2.0, seed=13), lora_tensors(layer, rank=3, seed=14)
    write_lora(loras, "first.safetensors", first)
    write_lora(loras, "second.safetensors", second)
    base = flux_schnell(manager)
    plain = base.apply_model(X, SIGMA, FLUX_INPUTS)

    (zero,) = LoraLoaderModelOnly().load_lora_model_only(base, "first.safetensors", 0.0)
    zero_model, _ = LoraLoader().load_lora(base, flux_clip(manager), "first.safetensors", 0.0, 1.0)
    assert torch.equal(zero.apply_model(X, SIGMA, FLUX_INPUTS), plain)
    assert torch.equal(zero_model.apply_model(X, SIGMA, FLUX_INPUTS), plain)

    (one,) = LoraLoaderModelOnly().load_lora_model_only(base, "first.safetensors", 0.6)
    (both,) = LoraLoaderModelOnly().load_lora_model_only(one, "second.safetensors", -0.9)
    after = weights_of(both.module(), both.patches)
    w = file_weights(test_models_dir, "diffusion_models/flux1-schnell.safetensors")[
        "double_blocks.0.txt_mod.lin.weight"
    ]
    up1, down1 = up_down(first, "lora_unet_double_blocks_0_txt_mod_lin")
    up2, down2 = up_down(second, "lora_unet_double_blocks_0_txt_mod_lin")
    expected = w + (0.6 * (2.0 / 4)) * (up1 @ down1) + -0.9 * (up2 @ down2)
    assert torch.equal(after["transformer_blocks.0.norm1_context.linear.weight"], expected)
    assert one.patches == both.patches[:1], "the view a chained loader was given keeps its own patches"
    outputs = {name: view.apply_model(X, SIGMA, FLUX_INPUTS) for name, view in [("one", one), ("both", both)]}
    assert not torch.equal(outputs["one"], plain) and not torch.equal(outputs["both"], outputs["one"])


def test_a_run_without_the_lora_after_one_with_it_is_bit_identical_to_one_that_never_had_it(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    write_lora(loras, "a.safetensors", lora_tensors(KOHYA_LAYERS, alpha=4.0, seed=15))
    write_lora(loras, "b.safetensors", lora_tensors(KOHYA_LAYERS, form="loha", seed=16))
    base = flux_schnell(manager)
    never = base.apply_model(X, SIGMA, FLUX_INPUTS)
    (a,) = LoraLoaderModelOnly().load_lora_model_only(base, "a.safetensors", 1.0)
    (b,) = LoraLoaderModelOnly().load_lora_model_only(base, "b.safetensors", 1.0)

    with_a = a.apply_model(X, SIGMA, FLUX_INPUTS)
    assert not torch.equal(with_a, never)
    assert torch.equal(base.apply_model(X, SIGMA, FLUX_INPUTS), never)
    with_b = b.apply_model(X, SIGMA, FLUX_INPUTS)
    assert torch.equal(a.apply_model(X, SIGMA, FLUX_INPUTS), with_a)
    assert not torch.equal(with_b, with_a)
    assert torch.equal(base.apply_model(X, SIGMA, FLUX_INPUTS), never)

    stored = file_weights(test_models_dir, "diffusion_models/flux1-schnell.safetensors")
    module = base.module()
    assert torch.equal(
        module.get_parameter("norm_out.linear.weight"),
        torch.cat(
            [
                stored["final_layer.adaLN_modulation.1.weight"][H:],
                stored["final_layer.adaLN_modulation.1.weight"][:H],
            ]
        ),
    )


def test_a_pickle_lora_is_refused_saying_why(loras: Path, manager: ModelManager) -> None:
    (loras / "old_style.pt").write_bytes(b"\x80\x04whatever")
    assert "old_style.pt" in LoraLoader.INPUT_TYPES()["required"]["lora_name"][0]
    with pytest.raises(WeightsFileError, match="run arbitrary code"):
        LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), "old_style.pt", 1.0)


def lora_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "engine.diffusion.lora.apply" and r.levelno == logging.WARNING
    ]


def test_a_flux_lora_given_to_auraflow_changes_nothing_and_reports_every_key(
    loras: Path, manager: ModelManager, caplog: pytest.LogCaptureFixture
) -> None:
    write_lora(loras, "flux_style.safetensors", lora_tensors(KOHYA_LAYERS, alpha=4.0, seed=17))
    model, _, _ = CheckpointLoaderSimple(manager).load_checkpoint("aura_flow_0.3.safetensors")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    inputs = ModelInputs(torch.randn(1, 6, 32, generator=torch.Generator().manual_seed(5)))
    plain = model.apply_model(x, SIGMA, inputs)

    with caplog.at_level(logging.INFO, logger="engine.diffusion.lora.apply"):
        (patched_model,) = LoraLoaderModelOnly().load_lora_model_only(model, "flux_style.safetensors", 1.0)

    assert patched_model.patches == ()
    assert torch.equal(patched_model.apply_model(x, SIGMA, inputs), plain)
    (warning,) = lora_warnings(caplog)
    assert warning == (
        "LoRA flux_style.safetensors: 12 of its 12 keys not loaded into AuraFlow; no weight of AuraFlow has "
        "this name: lora_unet_double_blocks_0_img_attn_qkv.alpha, "
        "lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight, "
        "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight and 9 more"
    )
    assert "LoRA flux_style.safetensors: nothing applied" in caplog.text


def test_model_only_reports_text_encoder_keys_and_a_misfit_shape_is_left_out(
    loras: Path, manager: ModelManager, caplog: pytest.LogCaptureFixture
) -> None:
    layers = {
        "lora_unet_double_blocks_0_img_mlp_0": FLUX_LAYOUT["double_blocks.0.img_mlp.0.weight"],
        "lora_unet_double_blocks_0_img_mlp_2": (H, 2 * M),
        "lora_te1_text_model_encoder_layers_0_mlp_fc1": (128, 64),
    }
    write_lora(
        loras, "mixed.safetensors", {**lora_tensors(layers, alpha=4.0, seed=18), "stray": torch.zeros(1)}
    )
    with caplog.at_level(logging.INFO, logger="engine.diffusion.lora.apply"):
        (model,) = LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), "mixed.safetensors", 1.0)

    assert {patch.param for patch in model.patches} == {"transformer_blocks.0.ff.net.0.proj.weight"}
    (warning,) = lora_warnings(caplog)
    assert warning.startswith("LoRA mixed.safetensors: 7 of its 10 keys not loaded into Flux schnell; ")
    misfit = f"its change is ({H}, {2 * M}) but that weight of Flux schnell is ({H}, {M})"
    assert f"{misfit}: lora_unet_double_blocks_0_img_mlp_2.alpha, " in warning
    te_key = "lora_te1_text_model_encoder_layers_0_mlp_fc1.alpha"
    assert f"no weight of Flux schnell has this name: {te_key}, " in warning
    assert "; not a part of any LoRA format: stray" in warning
    assert "mixed.safetensors: 1 layers of Flux schnell" in caplog.text


class CaptureLatent:
    """An output node handing the sampled latent back in its ui (exact tensors, not 8-bit pixels)."""

    CATEGORY = "test"
    FUNCTION = "capture"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"samples": ("LATENT",)}}

    def capture(self, samples: dict[str, torch.Tensor]) -> dict[str, Any]:
        return {"ui": {"samples": [samples["samples"]]}}


@pytest.fixture
def registry() -> NodeRegistry:
    registry = NodeRegistry()
    for module in (loaders, latent, conditioning, text_encoders, sampling):
        registry.register(module.NODE_CLASS_MAPPINGS, module.NODE_DISPLAY_NAME_MAPPINGS)
    registry.register({"CaptureLatent": CaptureLatent}, python_module="tests")
    return registry


def flux_graph(lora: str | None, seed: int) -> dict[str, Any]:
    """ComfyUI's Flux schnell example (UNETLoader, DualCLIPLoader), small, with a LoraLoader between the
    loaders and their users when `lora` is given."""
    model, clip = ["12", 0], ["11", 0]
    graph: dict[str, Any] = {
        "11": {
            "class_type": "DualCLIPLoader",
            "inputs": {
                "clip_name1": "t5xxl_fp16.safetensors",
                "clip_name2": "clip_l.safetensors",
                "type": "flux",
            },
        },
        "12": {
            "class_type": "UNETLoader",
            "inputs": {"unet_name": "flux1-schnell.safetensors", "weight_dtype": "default"},
        },
    }
    if lora is not None:
        graph["30"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": lora,
                "strength_model": 0.9,
                "strength_clip": 1.1,
            },
        }
        model, clip = ["30", 0], ["30", 1]
    graph |= {
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a bottle with a galaxy inside", "clip": clip},
        },
        "13": {
            "class_type": "SamplerCustomAdvanced",
            "inputs": {
                "noise": ["25", 0],
                "guider": ["22", 0],
                "sampler": ["16", 0],
                "sigmas": ["17", 0],
                "latent_image": ["5", 0],
            },
        },
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {
            "class_type": "BasicScheduler",
            "inputs": {"scheduler": "simple", "steps": 2, "denoise": 1.0, "model": model},
        },
        "22": {"class_type": "BasicGuider", "inputs": {"model": model, "conditioning": ["6", 0]}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": seed}},
        "40": {"class_type": "CaptureLatent", "inputs": {"samples": ["13", 0]}},
    }
    return graph


def aura_graph(lora: str | None) -> dict[str, Any]:
    """ComfyUI's AuraFlow example (CheckpointLoaderSimple, KSampler), small, maybe with a LoraLoader."""
    model, clip = ["21", 0], ["21", 1]
    graph: dict[str, Any] = {
        "21": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "aura_flow_0.3.safetensors"}}
    }
    if lora is not None:
        graph["30"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "model": model,
                "clip": clip,
                "lora_name": lora,
                "strength_model": 1.0,
                "strength_clip": 1.0,
            },
        }
        model, clip = ["30", 0], ["30", 1]
    graph |= {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 3,
                "steps": 2,
                "cfg": 3.5,
                "sampler_name": "euler",
                "scheduler": "sgm_uniform",
                "denoise": 1.0,
                "model": model,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a glass of rainbow drink", "clip": clip}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "ugly jpeg", "clip": clip}},
        "40": {"class_type": "CaptureLatent", "inputs": {"samples": ["3", 0]}},
    }
    return graph


def run(executor: Executor, graph: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    validation = validate_prompt(executor.registry, graph)
    assert validation.validated is not None, validation
    result = executor.run(validation.validated, prompt_id="lora")
    assert result.status == "success", result.failure
    return result.outputs["40"]["samples"][0], result.cached


def test_graphs_with_and_without_a_lora_through_one_executor_and_its_cache(
    loras: Path, registry: NodeRegistry, manager: ModelManager
) -> None:
    clip_layout = text_encoder_layout(flux_clip(manager).encoders["l"].spec)
    te = {
        "lora_te1_text_model_encoder_layers_1_mlp_fc2": clip_layout[
            "text_model.encoder.layers.1.mlp.fc2.weight"
        ]
    }
    write_lora(
        loras,
        "style.safetensors",
        {**lora_tensors(KOHYA_LAYERS, alpha=4.0, seed=19), **lora_tensors(te, seed=20)},
    )
    resources = {"models": manager}
    never = run(Executor(registry, resources=resources), flux_graph(None, seed=1))[0]

    shared = Executor(registry, resources=resources)
    with_lora, _ = run(shared, flux_graph("style.safetensors", seed=1))
    without, cached = run(shared, flux_graph(None, seed=1))
    assert {"11", "12"} <= set(cached), "the loaders' outputs come from the cache, as the LoRA run left them"
    assert not torch.equal(with_lora, never)
    assert torch.equal(without, never)

    again, cached = run(shared, flux_graph("style.safetensors", seed=2))
    assert "22" in cached and "13" not in cached, (
        "the guider holding the LoRA view is cached, the sampler runs"
    )
    fresh = run(Executor(registry, resources=resources), flux_graph("style.safetensors", seed=2))[0]
    assert torch.equal(again, fresh)


def test_a_checkpoint_graph_with_a_lora_runs_and_one_without_it_afterwards_is_unchanged(
    loras: Path, registry: NodeRegistry, manager: ModelManager
) -> None:
    d = TINY_AURAFLOW.dim
    layers = {
        "transformer.joint_transformer_blocks.1.attn.to_v": (d, d),
        "transformer.single_transformer_blocks.0.ff.linear_1": AURA_LAYOUT[
            "single_layers.0.mlp.c_fc1.weight"
        ],
    }
    pile_layout = text_encoder_layout(
        CheckpointLoaderSimple(manager)
        .load_checkpoint("aura_flow_0.3.safetensors")[1]
        .encoders["pile_t5xl"]
        .spec
    )
    q = "encoder.block.0.layer.0.SelfAttention.q"
    pile = {f"text_encoders.pile_t5xl.transformer.{q}": pile_layout[f"{q}.weight"]}
    write_lora(
        loras,
        "aura_style.safetensors",
        {**lora_tensors(layers, form="peft", seed=21), **lora_tensors(pile, seed=22)},
    )
    resources = {"models": manager}
    never = run(Executor(registry, resources=resources), aura_graph(None))[0]
    shared = Executor(registry, resources=resources)
    with_lora = run(shared, aura_graph("aura_style.safetensors"))[0]
    without = run(shared, aura_graph(None))[0]
    assert not torch.equal(with_lora, never)
    assert torch.equal(without, never)


def test_fp8_weights_take_the_change_rounded_to_fp8_and_get_their_exact_bits_back(
    loras: Path, manager: ModelManager, test_models_dir: Path
) -> None:
    layer = {"lora_unet_double_blocks_1_img_mlp_0": FLUX_LAYOUT["double_blocks.1.img_mlp.0.weight"]}
    lora = lora_tensors(layer, alpha=2.0, seed=23)
    write_lora(loras, "fp8.safetensors", lora)
    model, _, _ = CheckpointLoaderSimple(manager).load_checkpoint("flux1-schnell-fp8.safetensors")
    (view,) = LoraLoaderModelOnly().load_lora_model_only(model, "fp8.safetensors", 1.25)
    plain = model.apply_model(X, SIGMA, FLUX_INPUTS)

    stored = load_tensors(
        test_models_dir / "checkpoints/flux1-schnell-fp8.safetensors", "model.diffusion_model."
    )["double_blocks.1.img_mlp.0.weight"]
    up, down = up_down(lora, "lora_unet_double_blocks_1_img_mlp_0")
    expected = (stored.float() + (1.25 * (2.0 / 4)) * (up @ down)).to(torch.float8_e4m3fn)
    after = weights_of(view.module(), view.patches)["transformer_blocks.1.ff.net.0.proj.weight"]
    assert after.dtype == torch.float8_e4m3fn
    assert torch.equal(after.view(torch.uint8), expected.view(torch.uint8))
    assert not torch.equal(view.apply_model(X, SIGMA, FLUX_INPUTS), plain)
    assert torch.equal(model.apply_model(X, SIGMA, FLUX_INPUTS), plain)
    restored = model.module().get_parameter("transformer_blocks.1.ff.net.0.proj.weight")
    assert torch.equal(restored.view(torch.uint8), stored.view(torch.uint8))


def test_the_output_cache_counts_the_lora_a_view_keeps_alive(loras: Path, manager: ModelManager) -> None:
    lora = lora_tensors(KOHYA_LAYERS, alpha=4.0, seed=24)
    write_lora(loras, "counted.safetensors", lora)
    base = flux_schnell(manager)
    (view,) = LoraLoaderModelOnly().load_lora_model_only(base, "counted.safetensors", 1.0)
    factors = sum(t.numel() * t.element_size() for key, t in lora.items() if not key.endswith(".alpha"))
    assert estimate_nbytes(view) == factors
    assert estimate_nbytes(base) == 0


def test_two_threads_running_a_patched_and_an_unpatched_view_each_get_their_own_weights(
    loras: Path, manager: ModelManager
) -> None:
    write_lora(loras, "threads.safetensors", lora_tensors(KOHYA_LAYERS, alpha=4.0, seed=25))
    base = flux_schnell(manager)
    (view,) = LoraLoaderModelOnly().load_lora_model_only(base, "threads.safetensors", 1.0)
    expected = {
        "base": base.apply_model(X, SIGMA, FLUX_INPUTS),
        "view": view.apply_model(X, SIGMA, FLUX_INPUTS),
    }
    results: dict[str, list[torch.Tensor]] = {"base": [], "view": []}

    def keep_running(name: str, model: LoadedDiffusionModel) -> None:
        for _ in range(6):
            results[name].append(model.apply_model(X, SIGMA, FLUX_INPUTS))

    threads = [threading.Thread(target=keep_running, args=item) for item in (("base", base), ("view", view))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    for name, outputs in results.items():
        assert len(outputs) == 6 and all(torch.equal(output, expected[name]) for output in outputs), name


def test_a_lora_replaced_under_the_same_name_is_not_served_from_the_cache(loras: Path) -> None:
    layer = {"lora_unet_double_blocks_0_img_mlp_0": FLUX_LAYOUT["double_blocks.0.img_mlp.0.weight"]}
    write_lora(loras, "evolving.safetensors", lora_tensors(layer, rank=2))
    before = LoraLoader.IS_CHANGED(lora_name="evolving.safetensors", strength_model=1.0, strength_clip=1.0)
    write_lora(loras, "evolving.safetensors", lora_tensors(layer, rank=8))
    after = LoraLoader.IS_CHANGED(lora_name="evolving.safetensors", strength_model=1.0, strength_clip=1.0)
    assert before != after


@pytest.mark.parametrize("name", ["../checkpoints/aura_flow_0.3.safetensors", "/etc/passwd", "a/../../b"])
def test_lora_names_cannot_leave_the_loras_folder(loras: Path, manager: ModelManager, name: str) -> None:
    with pytest.raises(folders.PathEscapeError):
        LoraLoaderModelOnly().load_lora_model_only(flux_schnell(manager), name, 1.0)
