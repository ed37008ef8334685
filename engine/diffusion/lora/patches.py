"""Weight patches applied in place to a resident module, and undone when a run asks for other ones.

A MODEL or CLIP with LoRAs is a light view: the shared resident module plus a tuple of patches. The
module itself is changed only when a view is used (ComfyUI's ModelPatcher idea): `patched` makes the
module's weights those the view asks for, W + Σ strength · ΔW computed in float32 and stored in the
weight's own dtype, after saving the original of each parameter it changes (only those). When a view
with other patches (or none) uses the module next, the originals are copied back first, so an
unpatched run gives bit for bit what it gives on a module never patched. Nothing is copied per
request: a run of many steps patches once, at its first step.

The originals are kept in host memory (on a GPU, as ComfyUI's offload copies are), for as long as the
module stays patched. The state lives on the module object, so a module the model manager evicts and
builds again starts unpatched and with nothing saved.

Concurrency: a worker runs one graph at a time, but nothing stops two threads from running a shared
module. Each module has a lock, held while its weights are made right and through the whole forward,
so two views never see each other's weights; a second view waits for the first's forward to finish.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from engine.diffusion.lora.adapters import Adapter, Rows

STATE_ATTRIBUTE = "_engine_weight_patches"

BACKUP_DEVICE = torch.device("cpu")


@dataclass(frozen=True)
class WeightPatch:
    """`strength` times the rows `rows` of one layer's change, added to one module parameter.

    Equal patches are the same change of the same parameter: adapters compare by identity, so a view
    made again from the same cached LoRA keeps the module as it is.
    """

    param: str
    adapter: Adapter
    rows: Rows | None
    strength: float

    def delta(self, device: torch.device) -> torch.Tensor:
        return self.adapter.delta(self.rows, self.strength, device)


def patches_nbytes(patches: Sequence[WeightPatch]) -> int:
    """Memory held by the patches' adapters, each counted once."""
    adapters = {id(patch.adapter): patch.adapter for patch in patches}
    return sum(adapter.nbytes for adapter in adapters.values())


@dataclass
class _PatchState:
    lock: threading.Lock = field(default_factory=threading.Lock)
    applied: tuple[WeightPatch, ...] = ()
    originals: dict[str, torch.Tensor] = field(default_factory=dict)

    def restore(self, module: torch.nn.Module) -> None:
        for name, original in self.originals.items():
            module.get_parameter(name).detach().copy_(original)
        self.originals.clear()
        self.applied = ()

    def apply(self, module: torch.nn.Module, patches: tuple[WeightPatch, ...]) -> None:
        by_param: dict[str, list[WeightPatch]] = {}
        for patch in patches:
            by_param.setdefault(patch.param, []).append(patch)
        try:
            for name, group in by_param.items():
                weight = module.get_parameter(name).detach()
                self.originals[name] = weight.to(BACKUP_DEVICE, copy=True)
                updated = weight.to(torch.float32, copy=True)
                for patch in group:
                    updated += patch.delta(weight.device)
                weight.copy_(updated)
        except BaseException:
            self.restore(module)
            raise
        self.applied = patches


@contextmanager
def patched(module: torch.nn.Module, patches: tuple[WeightPatch, ...]) -> Iterator[None]:
    """Run the block with the module's weights patched by exactly `patches` (none: its own weights)."""
    state = module.__dict__.setdefault(STATE_ATTRIBUTE, _PatchState())
    with state.lock:
        if state.applied is not patches and state.applied != patches:  # the same view, step after step
            state.restore(module)
            if patches:
                state.apply(module, patches)
        yield
