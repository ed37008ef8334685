"""First-block step caching (the idea of ParaAttention's first-block cache and TeaCache): skip most of a
transformer's blocks on steps where its input has barely moved.

Each forward runs the first block. Its image-token residual (output minus input) is compared with the
one of the last forward that ran every block: when the relative mean absolute difference is below the
threshold, the other blocks are skipped and the residual they added last time (the image tokens after
the last block minus after the first) is added instead. Otherwise every block runs and both residuals
are stored. Comparing against the last full forward, not the previous step, bounds the drift: small
changes accumulate until they pass the threshold and force a full step.

It is opt-in (PerformanceSettings.step_cache_threshold) and changes the image: how much is measured by
tests/diffusion/test_fast_paths.py on the test models and stated in the README.

The blocks are diffusers' (Flux: double and single blocks both return (text, image); AuraFlow: double
blocks return (text, image), single blocks one tensor of text then image tokens). The cache takes over
their `forward` only while a forward it serves runs, so the shared module is untouched otherwise.

A state belongs to one sequence of forwards: one sampling run's forward of one group of prompts (the
caller keys it by that forward's inputs), started afresh when sigma does not decrease (a new run).
Forwards planned anew at every step (conditioning limited to part of the schedule) get a fresh state
each time, so they are never skipped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

DOUBLE_LISTS = ("transformer_blocks", "joint_transformer_blocks")
SINGLE_LISTS = ("single_transformer_blocks",)
MAX_STATES = 8
"""Sequences followed at once (forwards a step makes: prompt groups, area crops)."""


@dataclass
class StepCacheState:
    sigma: float | None = None
    first_residual: torch.Tensor | None = None
    """The first block's image residual at the last full forward."""
    tail_residual: torch.Tensor | None = None
    """What the blocks after the first added to the image tokens at the last full forward."""
    skipped: int = 0
    computed: int = 0


def _image(output: Any, image_tokens: int) -> torch.Tensor:
    """The image tokens of a block's output: the second of (text, image), or the last of one tensor."""
    if isinstance(output, tuple):
        return output[1]
    return output[:, -image_tokens:]


def _with_image(output: Any, image: torch.Tensor, image_tokens: int) -> Any:
    if isinstance(output, tuple):
        return (output[0], image)
    return torch.cat([output[:, :-image_tokens], image], dim=1)


def _passthrough(kwargs: dict[str, Any]) -> Any:
    """A skipped block's output: its input unchanged, in the block's own return form."""
    if "encoder_hidden_states" in kwargs:
        return (kwargs["encoder_hidden_states"], kwargs["hidden_states"])
    return kwargs["hidden_states"]


class _Run:
    """The block forwards of one cached model forward."""

    def __init__(self, state: StepCacheState, threshold: float, last: int) -> None:
        self.state = state
        self.threshold = threshold
        self.last = last
        self.skip = False
        self.image_tokens = 0
        self.after_first: torch.Tensor | None = None

    def block(self, index: int, forward: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        state = self.state
        if index == 0:
            image_in = kwargs["hidden_states"]
            self.image_tokens = image_in.shape[1]
            output = forward(**kwargs)
            self.after_first = _image(output, self.image_tokens)
            residual = self.after_first - image_in
            previous = state.first_residual
            self.skip = (
                previous is not None
                and state.tail_residual is not None
                and previous.shape == residual.shape
                and float((residual - previous).abs().mean() / previous.abs().mean().clamp(min=1e-12))
                < self.threshold
            )
            if not self.skip:
                state.first_residual = residual
            return output
        if self.skip:
            output = _passthrough(kwargs)
            if index == self.last:
                assert state.tail_residual is not None and self.after_first is not None
                state.skipped += 1
                return _with_image(output, self.after_first + state.tail_residual, self.image_tokens)
            return output
        output = forward(**kwargs)
        if index == self.last:
            assert self.after_first is not None
            state.tail_residual = _image(output, self.image_tokens) - self.after_first
            state.computed += 1
        return output


class StepCaches:
    """The states of one model's cached forward sequences, and the switch into the blocks."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._states: OrderedDict[Hashable, StepCacheState] = OrderedDict()

    def state_for(self, key: Hashable, sigma: float) -> StepCacheState:
        """The state of the sequence `key` at `sigma`; a fresh one if sigma did not decrease."""
        state = self._states.pop(key, None)
        if state is None or state.sigma is None or not sigma < state.sigma:
            state = StepCacheState()
        state.sigma = sigma
        self._states[key] = state
        while len(self._states) > MAX_STATES:
            self._states.popitem(last=False)
        return state

    @contextmanager
    def serving(self, module: torch.nn.Module, state: StepCacheState) -> Iterator[None]:
        """Within: `module`'s blocks run through the cache with `state`."""
        blocks = [
            block
            for names in (DOUBLE_LISTS, SINGLE_LISTS)
            for name in names
            for block in getattr(module, name, ())
        ]
        if len(blocks) < 2:
            yield
            return
        run = _Run(state, self.threshold, len(blocks) - 1)
        # forwards already set on the instances (diffusers' hooks do that) are put back afterwards
        own = [block.__dict__.get("forward") for block in blocks]
        for index, block in enumerate(blocks):
            original = block.forward

            def cached(*args: Any, _i: int = index, _f: Callable[..., Any] = original, **kwargs: Any) -> Any:
                if args:
                    raise TypeError("step caching expects the blocks to be called with keyword arguments")
                return run.block(_i, _f, kwargs)

            block.forward = cached
        try:
            yield
        finally:
            for block, previous in zip(blocks, own, strict=True):
                if previous is None:
                    del block.forward
                else:
                    block.forward = previous
