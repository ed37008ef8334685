"""MODEL_PATCH: weights that patch a diffusion model rather than being one (ModelPatchLoader's files).

The kind this engine runs is USO's style projector (`uso-flux1-projector-v1.safetensors`), whose tensors
sit under `feature_embedder.`: three branches, one each for the SigLIP states of layer -20 ("low"), -11
("mid") and the penultimate layer ("high"). Each branch mixes the image's tokens down to a few style
tokens (a linear layer over the token axis, 729 -> 64, then SiLU), normalises them (LayerNorm over the
SigLIP width) and projects them to the Flux transformer's width (1152 -> 3072). The three results, high
then mid then low, are the style tokens USOStyleReference puts before the text tokens inside the model.
All widths are read from the file, so the tiny test file loads through the same code.

ComfyUI's other model patches (Qwen-Image's block-wise ControlNet, Z-Image's Fun ControlNet, MultiTalk's
audio blocks) belong to model families this engine does not run and are refused by name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.diffusion.clip_vision import ClipVisionOutput, load_exactly
from engine.diffusion.model_manager import ModelKey, ModelManager
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError, load_tensors, read_header

USO_PREFIX = "feature_embedder."
USO_KEY = USO_PREFIX + "mid_layer_norm.bias"
BRANCHES = ("high", "mid", "low")
"""The projector's branches, in the order their tokens are concatenated."""
USO_LAYERS = (-20, -11)
"""The SigLIP layers the low and mid branches read (the high branch reads the penultimate layer)."""
OTHER_PATCHES = {
    "controlnet_blocks.0.y_rms.weight": "a Qwen-Image block-wise ControlNet",
    "control_all_x_embedder.2-1.weight": "a Z-Image Fun ControlNet",
    "audio_proj.proj1.weight": "a MultiTalk audio patch (Wan)",
}
"""Marker tensors of ComfyUI's model patches for families this engine does not run."""


@dataclass(frozen=True)
class UsoProjectorConfig:
    image_tokens: int
    """SigLIP tokens per image (729 for so400m at 384 pixels)."""
    style_tokens: int
    """Tokens each branch makes of them (64)."""
    vision_width: int
    """SigLIP state width (1152)."""
    hidden_width: int
    """The Flux transformer's width the tokens are projected to (3072)."""

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, TensorInfo], name: str) -> UsoProjectorConfig:
        try:
            mix = tensors[USO_PREFIX + "high_embedding_linear.0.weight"].shape
            projection = tensors[USO_PREFIX + "high_projection.weight"].shape
        except KeyError as missing:
            raise WeightsFileError(
                f"{name}: a USO projector without {missing}; the file may be damaged"
            ) from None
        return cls(
            image_tokens=mix[1], style_tokens=mix[0], vision_width=projection[1], hidden_width=projection[0]
        )


class UsoProjector(nn.Module):
    """USO's SigLIP multi-layer projector; parameter names are the file's without `feature_embedder.`."""

    def __init__(self, config: UsoProjectorConfig) -> None:
        super().__init__()
        self.config = config
        for name in BRANCHES:
            mix = nn.Sequential(nn.Linear(config.image_tokens, config.style_tokens), nn.SiLU())
            self.add_module(f"{name}_embedding_linear", mix)
            self.add_module(f"{name}_layer_norm", nn.LayerNorm(config.vision_width))
            self.add_module(f"{name}_projection", nn.Linear(config.vision_width, config.hidden_width))

    def branch(self, name: str, states: torch.Tensor) -> torch.Tensor:
        """[B, image tokens, vision width] -> [B, style tokens, hidden width]: tokens mixed, then each
        normalised and projected."""
        mixed = self.get_submodule(f"{name}_embedding_linear")(states.transpose(1, 2)).transpose(1, 2)
        return self.get_submodule(f"{name}_projection")(self.get_submodule(f"{name}_layer_norm")(mixed))

    def forward(self, low: torch.Tensor, mid: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """The style tokens [B, 3 x style tokens, hidden width] for the three layers' states."""
        states = {"high": high, "mid": mid, "low": low}
        return torch.cat([self.branch(name, states[name]) for name in BRANCHES], dim=1)


def uso_states(vision: ClipVisionOutput) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(low, mid, high): the SigLIP states USO's projector reads, as USOStyleReference picks them."""
    layers = vision.all_hidden_states.shape[1]
    if layers < -min(USO_LAYERS):
        raise ValueError(
            f"USO reads SigLIP layer {min(USO_LAYERS)}; the CLIP_VISION_OUTPUT given has {layers} layers "
            "(encode the image with SigLIP so400m, sigclip_vision_patch14_384.safetensors)"
        )
    low, mid = (vision.all_hidden_states[:, layer] for layer in USO_LAYERS)
    return low, mid, vision.penultimate_hidden_states


class ModelPatch:
    """A model patch file (USO's projector); its module is kept by the model manager."""

    def __init__(self, path: Path, manager: ModelManager) -> None:
        tensors = read_header(path).tensors
        if USO_KEY not in tensors:
            kind = next((what for key, what in OTHER_PATCHES.items() if key in tensors), None)
            if kind is not None:
                raise WeightsFileError(f"{path.name}: {kind}, for a model family this engine does not run")
            raise WeightsFileError(
                f"{path.name}: not a model patch this engine runs (USO's projector, "
                f"uso-flux1-projector-v1.safetensors, with {USO_KEY})"
            )
        self.path = path
        self.manager = manager
        self.config = UsoProjectorConfig.from_tensors(tensors, path.name)
        self.key = ModelKey.for_file(path, "model_patch", dtype=str(manager.dtype))

    def module(self) -> UsoProjector:
        return self.manager.load(self.key, self._build)

    def _build(self) -> UsoProjector:
        with torch.device("meta"):
            module = UsoProjector(self.config)
        tensors = load_tensors(self.path, USO_PREFIX)
        load_exactly(f"{self.path.name} (USO projector)", module, tensors, self.manager.dtype)
        return module

    def style_tokens(self, vision: ClipVisionOutput) -> torch.Tensor:
        """USO's style tokens [B, 3 x style tokens, hidden width] for encoded images, float32 on the CPU."""
        low, mid, high = uso_states(vision)
        if high.shape[1:] != (self.config.image_tokens, self.config.vision_width):
            raise ValueError(
                f"{self.path.name} reads {self.config.image_tokens} SigLIP tokens of width "
                f"{self.config.vision_width}; the CLIP_VISION_OUTPUT given has {high.shape[1]} of width "
                f"{high.shape[2]} (encode the image with the SigLIP model USO was made for)"
            )
        module = self.module()
        device, dtype = self.manager.device, self.manager.dtype
        with self.manager.out_of_memory_guard("projecting USO's style tokens"), torch.no_grad():
            tokens = module(*(states.to(device, dtype) for states in (low, mid, high)))
        return tokens.float().cpu()


def load_model_patch(path: str | Path, manager: ModelManager) -> ModelPatch:
    patch = ModelPatch(Path(path), manager)
    patch.module()
    return patch
