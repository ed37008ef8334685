"""Text encoders from ComfyUI-layout files, made into the CLIP value of a graph.

Each encoder is named by a `TextEncoderSource`: a file, where its tensors start in that file, and the
spec read from their shapes. `load_clip` pairs each with its tokenizer (read now, so a missing one
fails the loader node) and with a way to build its transformers module, which the model manager
calls when the encoder is first used and again after it has been evicted.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from transformers.utils import logging as transformers_logging

from engine.diffusion.model_manager import ModelKey, ModelManager
from engine.diffusion.safetensors_file import TensorInfo, WeightsFileError, load_tensors, read_header
from engine.diffusion.text_encoders.clip import CLIP
from engine.diffusion.text_encoders.detect import architecture, detect_text_encoder, text_encoder_layout
from engine.diffusion.text_encoders.encoder import FAMILY_TRAITS, TextEncoder
from engine.diffusion.text_encoders.spec import FAMILY_NAMES, TextEncoderFamily, TextEncoderSpec
from engine.diffusion.text_encoders.tokenizer_files import find_tokenizer, load_tokenizer

log = logging.getLogger(__name__)

CHECKPOINT_PREFIXES: dict[TextEncoderFamily, str] = {
    "clip_l": "text_encoders.clip_l.transformer.",
    "t5xxl": "text_encoders.t5xxl.transformer.",
    "pile_t5xl": "text_encoders.pile_t5xl.transformer.",
}
"""Where ComfyUI's all-in-one checkpoints (Flux, AuraFlow) keep each text encoder."""


class UnsupportedTextEncodersError(ValueError):
    """A combination of encoders and loader type that no model the engine serves uses."""


@dataclass(frozen=True)
class TextEncoderSource:
    path: Path
    spec: TextEncoderSpec
    prefix: str = ""
    """Where the encoder's tensor names start: "" in a text-encoder file, one of CHECKPOINT_PREFIXES
    in an all-in-one checkpoint."""

    @classmethod
    def from_file(cls, path: str | Path, prefix: str = "") -> TextEncoderSource:
        """The encoder stored under `prefix` in the file; an error saying why when there is none."""
        header = read_header(path)
        tensors = header.under(prefix)
        _refuse_scaled_fp8(header.path, tensors)
        spec = detect_text_encoder(tensors)
        if spec is None:
            where = f" under '{prefix}'" if prefix else ""
            raise WeightsFileError(
                f"{header.path.name}: holds no text encoder{where} that this engine loads "
                "(CLIP-L, T5-XXL or Pile-T5-XL, in ComfyUI's layout)"
            )
        return cls(header.path, spec, prefix)


def sources_in_checkpoint(path: str | Path) -> list[TextEncoderSource]:
    """The text encoders inside an all-in-one checkpoint, found at ComfyUI's prefixes."""
    header = read_header(path)
    return [
        TextEncoderSource.from_file(header.path, prefix)
        for prefix in CHECKPOINT_PREFIXES.values()
        if any(name.startswith(prefix) for name in header.tensors)
    ]


@dataclass(frozen=True)
class Recipe:
    """How one model conditions on its encoders."""

    model: str
    families: frozenset[TextEncoderFamily]
    clip_types: frozenset[str] | None
    """The loader types that select it; None: any (ComfyUI routes a Pile-T5-XL file to AuraFlow whatever
    the type)."""
    cond_from: str
    pooled_from: str | None

    def describe(self) -> str:
        encoders = " + ".join(FAMILY_NAMES[family] for family in sorted(self.families))
        types = "any type" if self.clip_types is None else "type " + "/".join(sorted(self.clip_types))
        return f"{self.model} ({encoders}, {types})"


RECIPES = (
    Recipe("Flux", frozenset({"clip_l", "t5xxl"}), frozenset({"flux"}), cond_from="t5xxl", pooled_from="l"),
    Recipe("AuraFlow", frozenset({"pile_t5xl"}), None, cond_from="pile_t5xl", pooled_from=None),
    Recipe(
        "CLIP-L alone", frozenset({"clip_l"}), frozenset({"stable_diffusion"}), cond_from="l", pooled_from="l"
    ),
)
"""What the engine serves. ComfyUI builds other encoders for other types (SDXL, SD3, HiDream...), for
models this engine does not run."""


def find_recipe(families: Sequence[TextEncoderFamily], clip_type: str) -> Recipe:
    for recipe in RECIPES:
        if sorted(families) == sorted(recipe.families) and (
            recipe.clip_types is None or clip_type in recipe.clip_types
        ):
            return recipe
    given = " + ".join(FAMILY_NAMES[family] for family in families) or "no encoder"
    served = "; ".join(recipe.describe() for recipe in RECIPES)
    raise UnsupportedTextEncodersError(
        f"{given} with type '{clip_type}' is not a combination this engine serves. It serves: {served}."
    )


def load_clip(
    sources: Sequence[TextEncoderSource],
    clip_type: str = "stable_diffusion",
    tokenizer_roots: Sequence[Path] = (),
    *,
    manager: ModelManager,
) -> CLIP:
    """A CLIP for the encoders, conditioning as the model their combination and `clip_type` select.

    `tokenizer_roots` are the text_encoders folders, searched for tokenizers after the folder beside each
    weight file (see tokenizer_files). Weights are read when an encoder is first used.
    """
    recipe = find_recipe([source.spec.family for source in sources], clip_type)
    encoders: dict[str, TextEncoder] = {}
    for source in sources:
        family = source.spec.family
        tokenizer = load_tokenizer(family, find_tokenizer(family, source.path, tokenizer_roots))
        key = ModelKey.for_file(source.path, f"text_encoders.{family}")
        build = partial(build_module, source, manager.dtype)
        size = weight_bytes(source.spec, manager.dtype)
        encoders[FAMILY_TRAITS[family].token_key] = TextEncoder(
            source.spec,
            tokenizer,
            partial(manager.load, key, build, size),
            identity=(key, str(manager.dtype)),
            cache=manager.embedding_cache,
            release=partial(manager.release_text_encoder, key),
        )
    return CLIP(encoders, recipe.cond_from, recipe.pooled_from)


def build_module(source: TextEncoderSource, dtype: torch.dtype) -> torch.nn.Module:
    """The encoder's transformers module, on the CPU in `dtype`, with its weights read from the file."""
    mapping = architecture(source.spec)
    expected = mapping.module_state_dict(text_encoder_layout(source.spec))
    state = mapping.module_state_dict(load_tensors(source.path, source.prefix))
    _check_complete(source, expected, state)
    unused = sorted(set(state) - set(expected))
    if unused:
        log.debug("%s: ignoring tensors with no place in %s: %s", source.path.name, source.spec.name, unused)
    weights = {name: state.pop(name).to(dtype) for name in expected}
    model_class, config = mapping.transformers_model(source.spec.config)
    with _no_progress_bar():
        return model_class.from_pretrained(None, config=config, state_dict=weights, dtype=dtype)


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers draws a "Loading weights" bar on stderr: noise in a server's log."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def weight_bytes(spec: TextEncoderSpec, dtype: torch.dtype) -> int:
    """The encoder's size once loaded in `dtype` (so the manager can make room before building it)."""
    layout = architecture(spec).module_state_dict(text_encoder_layout(spec))
    return sum(math.prod(shape) for shape in layout.values()) * dtype.itemsize


def _check_complete(
    source: TextEncoderSource, expected: dict[str, tuple[int, ...]], state: dict[str, torch.Tensor]
) -> None:
    missing = [name for name in expected if name not in state]
    misshapen = [
        f"{name} {tuple(state[name].shape)} (expected {shape})"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    if missing or misshapen:
        problems = ([f"missing {', '.join(missing[:5])}"] if missing else []) + misshapen[:5]
        raise WeightsFileError(
            f"{source.path.name}: the {source.spec.name} weights under '{source.prefix}' are not complete: "
            + "; ".join(problems)
        )


def _refuse_scaled_fp8(path: Path, tensors: dict[str, TensorInfo]) -> None:
    if "scaled_fp8" in tensors or any(name.endswith(".scale_weight") for name in tensors):
        raise WeightsFileError(
            f"{path.name}: holds scaled fp8 weights (a scale factor stored beside each weight), which this "
            "engine does not read; use the fp16 or plain fp8_e4m3fn release of the text encoder"
        )
