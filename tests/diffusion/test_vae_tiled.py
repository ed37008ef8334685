"""VAEDecodeTiled and VAEEncodeTiled on the tiny test VAE: one tile is the plain VAE pass; smaller tiles
give images of the same size (how tiles blend is tested in test_tiling.py)."""

from __future__ import annotations

import pytest
import torch

from engine.diffusion.model_manager import ModelManager
from engine.nodes.image import VAEDecode, VAEEncode
from engine.nodes.loaders import VAELoader
from engine.nodes.vae_tiled import VAEDecodeTiled, VAEEncodeTiled

pytestmark = pytest.mark.usefixtures("dirs")


def latent() -> dict[str, torch.Tensor]:
    return {"samples": torch.randn(1, 16, 8, 16, generator=torch.Generator().manual_seed(0))}


def test_decode_tiled_in_one_tile_is_vae_decode(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    (whole,) = VAEDecode().decode(vae, latent())
    (tiled,) = VAEDecodeTiled().decode(vae, latent(), 512, 64)
    torch.testing.assert_close(tiled, whole)


def test_decode_tiled_in_small_tiles_keeps_the_size(manager: ModelManager) -> None:
    """64-pixel tiles (8 cells); an overlap over a quarter of the tile is lowered to a quarter."""
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    (image,) = VAEDecodeTiled().decode(vae, latent(), 64, 4096)
    assert image.shape == (1, 64, 128, 3)
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.01


def test_encode_tiled_in_one_tile_is_vae_encode(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    pixels = torch.rand(1, 61, 64, 3, generator=torch.Generator().manual_seed(1))
    (whole,) = VAEEncode().encode(vae, pixels)
    (tiled,) = VAEEncodeTiled().encode(vae, pixels, 512, 64)
    assert tiled["samples"].shape == (1, 16, 7, 8)
    torch.testing.assert_close(tiled["samples"], whole["samples"])


def test_encode_tiled_in_small_tiles_keeps_the_size(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    (latents,) = VAEEncodeTiled().encode(vae, torch.rand(1, 64, 128, 4), 64, 0)
    assert latents["samples"].shape == (1, 16, 8, 16)


def test_encode_tiled_refuses_an_overlap_of_half_the_tile(manager: ModelManager) -> None:
    (vae,) = VAELoader(manager).load_vae("ae.safetensors")
    with pytest.raises(ValueError, match="keep overlap under half"):
        VAEEncodeTiled().encode(vae, torch.rand(1, 128, 128, 3), 64, 32)
