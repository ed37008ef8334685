"""STYLE_MODEL: Flux Redux's image encoder, which turns SigLIP's image states into extra Flux text tokens.

`flux1-redux-dev.safetensors` holds two linear layers: `redux_up` (SigLIP width 1152 -> 3 x 4096) and
`redux_down` (3 x 4096 -> 4096, Flux's T5 token width), with SiLU between: tokens =
redux_down(silu(redux_up(last_hidden_state))), one token per image patch (729 for 384 / 14). Widths come
from the file. ComfyUI's other style model, the T2I style adapter (`style_embedding`), is refused by name.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.diffusion.clip_vision import ClipVisionOutput, load_exactly
from engine.diffusion.model_manager import ModelKey, ModelManager
from engine.diffusion.safetensors_file import WeightsFileError, load_tensors, read_header


class ReduxImageEncoder(nn.Module):
    def __init__(self, vision_width: int, hidden_width: int, token_width: int) -> None:
        super().__init__()
        self.redux_up = nn.Linear(vision_width, hidden_width)
        self.redux_down = nn.Linear(hidden_width, token_width)

    def forward(self, image_states: torch.Tensor) -> torch.Tensor:
        return self.redux_down(nn.functional.silu(self.redux_up(image_states)))


class StyleModel:
    """A Redux file; its module is kept by the model manager."""

    def __init__(self, path: Path, manager: ModelManager) -> None:
        tensors = read_header(path).tensors
        if "style_embedding" in tensors:
            raise WeightsFileError(
                f"{path.name}: a T2I style adapter; only Flux Redux style models (redux_up, redux_down) are "
                "supported"
            )
        up, down = tensors.get("redux_up.weight"), tensors.get("redux_down.weight")
        if up is None or down is None:
            raise WeightsFileError(
                f"{path.name}: not a style model (no redux_up.weight / redux_down.weight); Flux Redux's "
                "flux1-redux-dev.safetensors is the kind supported"
            )
        self.path = path
        self.manager = manager
        self.widths = (up.shape[1], up.shape[0], down.shape[0])
        """(SigLIP width it reads, hidden width, token width it writes)."""
        self.key = ModelKey.for_file(path, "style_model", dtype=str(manager.dtype))

    def module(self) -> ReduxImageEncoder:
        return self.manager.load(self.key, self._build)

    def _build(self) -> ReduxImageEncoder:
        with torch.device("meta"):
            module = ReduxImageEncoder(*self.widths)
        load_exactly(f"{self.path.name} (Flux Redux)", module, load_tensors(self.path), self.manager.dtype)
        return module

    def get_cond(self, vision: ClipVisionOutput) -> torch.Tensor:
        """The tokens [B, patches, token width] for the encoded images, float32 on the CPU."""
        states = vision.last_hidden_state
        if states.shape[-1] != self.widths[0]:
            raise ValueError(
                f"{self.path.name} reads {self.widths[0]}-wide image states; the CLIP_VISION_OUTPUT given is "
                f"{states.shape[-1]} wide (encode the image with the SigLIP model Redux was made for)"
            )
        module = self.module()
        with self.manager.out_of_memory_guard("applying the style model"), torch.no_grad():
            tokens = module(states.to(self.manager.device, self.manager.dtype))
        return tokens.float().cpu()


def load_style_model(path: str | Path, manager: ModelManager) -> StyleModel:
    style_model = StyleModel(Path(path), manager)
    style_model.module()
    return style_model
