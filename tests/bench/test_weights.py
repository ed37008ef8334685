"""The benchmark's weights: full-size layouts of the published models, written tensor by tensor.

Sizes are checked against figures from outside the code: PERF.md's parameter counts and diffusers'
FluxTransformer2DModel defaults (Flux.1's published config). Files are read back by safetensors itself.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from diffusers import FluxTransformer2DModel
from safetensors import safe_open

from engine.bench.weights import ENDPOINT_FILES, FULL, SMALL, WeightsCache, weight_files, write_streamed
from engine.diffusion.safetensors_file import read_header


def parameters(layout: dict[str, tuple[int, ...]] | object) -> int:
    assert isinstance(layout, dict)
    return sum(math.prod(shape) for shape in layout.values())


def test_full_size_models_have_the_published_parameter_counts() -> None:
    files = weight_files(FULL)
    # PERF.md: Flux 11.90 B, AuraFlow 6.86 B, T5-XXL 4.76 B, Pile-T5-XL 1.22 B, VAE 84 M
    assert parameters(dict(files["flux_dev"].layout)) / 1e9 == pytest.approx(11.90, abs=0.005)
    aura = dict(files["aura_flow"].layout)
    model = {k: v for k, v in aura.items() if k.startswith("model.")}
    encoder = {k: v for k, v in aura.items() if k.startswith("text_encoders.pile_t5xl.")}
    vae = {k: v for k, v in aura.items() if k.startswith("vae.")}
    assert len(model) + len(encoder) + len(vae) == len(aura)
    assert parameters(model) / 1e9 == pytest.approx(6.86, abs=0.005)
    assert parameters(encoder) / 1e9 == pytest.approx(1.22, abs=0.005)
    assert parameters(vae) / 1e6 == pytest.approx(84, abs=0.5)
    assert parameters(dict(files["t5xxl"].layout)) / 1e9 == pytest.approx(4.76, abs=0.005)
    assert parameters(dict(files["flux_ae"].layout)) / 1e6 == pytest.approx(84, abs=0.5)


def test_full_size_flux_is_diffusers_published_config() -> None:
    """diffusers' FluxTransformer2DModel defaults are FLUX.1's published config: the benchmark's
    full-size Flux must build the same module, tensor for tensor (built on the meta device: no memory)."""
    with torch.device("meta"):
        published = FluxTransformer2DModel().state_dict()
        schnell = FULL.flux_schnell.create_module().state_dict()
    assert {k: tuple(v.shape) for k, v in schnell.items()} == {
        k: tuple(v.shape) for k, v in published.items()
    }
    assert FULL.flux_dev.diffusers_config() == {
        **FULL.flux_schnell.diffusers_config(),
        "guidance_embeds": True,
    }


def test_a_streamed_file_is_read_back_by_safetensors_with_the_test_models_initialisation(
    tmp_path: Path,
) -> None:
    layout = {
        "blocks.0.linear.weight": (256, 1024),
        "blocks.0.linear.bias": (256,),
        "blocks.0.norm.scale": (128,),
        "blocks.1.conv.weight": (8, 16, 3, 3),
    }
    path = tmp_path / "file.safetensors"
    write_streamed(path, layout, torch.Generator().manual_seed(0), {"engine.bench.size": "small"})
    assert read_header(path).holds_random_test_weights
    with safe_open(str(path), framework="pt") as f:
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        assert f.metadata()["engine.bench.size"] == "small"
    assert {name: tuple(t.shape) for name, t in tensors.items()} == layout
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}
    matrix = tensors["blocks.0.linear.weight"].float()
    assert matrix.std().item() == pytest.approx(1 / math.sqrt(1024), rel=0.05)  # scaled by fan-in
    assert tensors["blocks.0.norm.scale"].float().mean().item() == pytest.approx(1.0, abs=0.05)
    assert tensors["blocks.0.linear.bias"].float().std().item() == pytest.approx(0.1, rel=0.2)
    assert tensors["blocks.1.conv.weight"].float().std().item() == pytest.approx(1 / 12, rel=0.1)
    assert not (tmp_path / "file.safetensors.partial").exists()


def test_the_cache_writes_each_file_once_and_rewrites_one_of_another_layout(tmp_path: Path) -> None:
    cache = WeightsCache(tmp_path, SMALL, torch.device("cpu"))
    first = cache.ensure("flux-schnell")
    assert [w.relative_path for w in first] == [
        cache.files[k].relative_path for k in ENDPOINT_FILES["flux-schnell"]
    ]
    assert not any(w.reused for w in first)
    assert (cache.models_dir / "text_encoders" / "tokenizers" / "t5xxl" / "spiece.model").is_file()
    stamp = cache.path("flux_schnell").stat().st_mtime_ns
    again = cache.ensure("flux-dev")  # shares the encoders and the VAE
    assert {w.relative_path: w.reused for w in again} == {
        "diffusion_models/flux1-dev.safetensors": False,
        "text_encoders/t5xxl_fp16.safetensors": True,
        "text_encoders/clip_l.safetensors": True,
        "vae/ae.safetensors": True,
    }
    assert cache.path("flux_schnell").stat().st_mtime_ns == stamp
    # a file of another size under the same name (the full-size run's, say) is not reused
    write_streamed(cache.path("clip_l"), {"x": (2, 2)}, torch.Generator().manual_seed(0))
    rewritten = {w.relative_path: w.reused for w in cache.ensure("flux-dev")}
    assert rewritten["text_encoders/clip_l.safetensors"] is False
    cache.evict("flux-schnell", ("aura-flow",))
    assert not cache.path("flux_schnell").exists() and not cache.path("t5xxl").exists()
    assert cache.path("flux_dev").exists()  # not one of flux-schnell's files
