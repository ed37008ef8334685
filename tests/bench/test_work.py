"""PERF.md's work model: its published figures at full size, and torch's own FLOP count of the modules.

At full size the counts are PERF.md's table (69.5 TFLOP per Flux forward at 4096 + 256 tokens, 74.4 at
512 text tokens, 44.0 for AuraFlow, 2.4 and 0.6 for the T5 encoders) and its bounds at 790 TFLOP/s.
At tiny size the model is checked against torch's FlopCounterMode running the engine's real module
(the test model), which counts every matrix product and attention the forward actually performs.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from engine.bench.weights import FULL, SMALL
from engine.bench.work import image_tokens, image_work, text_encoder, transformer_forward
from engine.diffusion.auraflow import AuraFlowConfig
from engine.diffusion.flux import FluxConfig
from engine.diffusion.protocols import ModelInputs

TERA = 1e12


def test_full_size_work_is_perf_md_table() -> None:
    assert image_tokens(FULL.flux_dev, 1024) == 4096
    assert image_tokens(FULL.auraflow, 1024) == 4096
    assert transformer_forward(FULL.flux_dev, 4096, 256) / TERA == pytest.approx(69.5, abs=0.05)
    assert transformer_forward(FULL.flux_dev, 4096, 512) / TERA == pytest.approx(74.4, abs=0.05)
    assert transformer_forward(FULL.auraflow, 4096, 256) / TERA == pytest.approx(44.0, abs=0.05)
    assert text_encoder(FULL.text_encoders["t5xxl"]) / TERA == pytest.approx(2.4, abs=0.05)
    assert text_encoder(FULL.text_encoders["pile_t5xl"]) / TERA == pytest.approx(0.6, abs=0.05)


def test_full_size_bounds_are_perf_md_bounds() -> None:
    encoders = [FULL.text_encoders["t5xxl"], FULL.text_encoders["clip_l"]]
    schnell = image_work(FULL.flux_schnell, encoders, FULL.flux_ae, 1024, 4, guided=False)
    aura = image_work(FULL.auraflow, [FULL.text_encoders["pile_t5xl"]], FULL.sdxl_vae, 1024, 25, guided=True)
    assert schnell.transformer_bound_seconds == pytest.approx(0.35, abs=0.005)
    assert aura.forwards == 50
    assert aura.transformer_bound_seconds == pytest.approx(2.78, abs=0.005)
    assert schnell.vae_decode / TERA == pytest.approx(10.5, abs=0.05)  # PERF.md: VAE decode at 1024^2


@pytest.mark.parametrize("config", [SMALL.flux_dev, SMALL.auraflow], ids=["flux", "auraflow"])
def test_the_model_counts_what_the_real_forward_computes(config: FluxConfig | AuraFlowConfig) -> None:
    """torch counts the embedders and modulation too, which the model leaves out (they run once per
    image, not per token): within 2 % at 88 tokens of a 64-wide test model. On the meta device, where
    attention runs as its matrix products (the CPU's fused attention kernel is not counted by torch)."""
    side, text = 128, 24
    with torch.device("meta"):
        module = config.create_module().eval()
        x = torch.randn(1, 16 if isinstance(config, FluxConfig) else 4, side // 8, side // 8)
        sigma = torch.ones(1)
        if isinstance(config, FluxConfig):
            inputs = ModelInputs(
                context=torch.randn(1, text, config.context_in_dim),
                pooled=torch.randn(1, config.vec_in_dim),
                guidance=torch.ones(1),
            )
        else:
            inputs = ModelInputs(context=torch.randn(1, text, config.cond_dim))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        config.predict(module, x, sigma, inputs)  # type: ignore[arg-type]
    modelled = transformer_forward(config, image_tokens(config, side), text)
    assert modelled == pytest.approx(counter.get_total_flops(), rel=0.02)
