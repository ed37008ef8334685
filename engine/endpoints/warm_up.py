"""The cheapest run of an endpoint's graph, for the run that loads its models before the server is ready.

A warm-up exists to load the weights and run every node once; the image it makes is thrown away. At a
template's defaults (1024x1024, 25 steps) it costs as much as a real request, minutes on a CPU, and
`/ready` waits for it. Even the smallest size a request may ask for is large: fal's AuraFlow route has
no size field at all (always 1024x1024) and flux-pro's smallest aspect ratio is about a megapixel. So
the warm-up goes below what requests may ask: the graph is built from the endpoint's defaults and then
every constant node input a run's cost grows with (latent size, batch, sampling steps) is set to the
least value the node itself declares (`min` in its INPUT_TYPES: 16 pixels, 1 step, a batch of 1). The
models load and every node runs exactly as for a request; only the tensors are tiny.

When the diffusion transformer is compiled, the warm-up is also what compiles it, and the first shapes
compiled are the ones given a static graph (and CUDA graphs; see engine.diffusion.acceleration). Then
only the steps are cut: the size and batch stay at the endpoint's defaults, the size most requests ask
for, and one step at 1024x1024 costs a GPU a fraction of a second.
"""

from __future__ import annotations

import copy
from typing import Any

from engine.endpoints.spec import Endpoint
from engine.graph.registry import NodeRegistry

COST_INPUTS = frozenset({"width", "height", "batch_size", "steps"})
"""Node inputs whose value the run time grows with: latent size, batch size, sampling steps."""
SHAPE_INPUTS = frozenset({"width", "height", "batch_size"})


def warm_up_prompt(
    endpoint: Endpoint, registry: NodeRegistry, output_prefix: str, keep_shapes: bool = False
) -> dict[str, Any]:
    """The endpoint's graph at its defaults, with each cost input at its node's declared minimum (with
    `keep_shapes`, the steps only: the size and batch a compiled model should be compiled for stay)."""
    cut = COST_INPUTS - SHAPE_INPUTS if keep_shapes else COST_INPUTS
    prompt = copy.deepcopy(endpoint.build(endpoint.defaults(), output_prefix=output_prefix))
    for node in prompt.values():
        class_type = node.get("class_type")
        if class_type not in registry:
            continue
        specs = registry.definition(class_type).inputs
        inputs = node.get("inputs", {})
        for name, value in inputs.items():
            spec = specs.get(name)
            if name not in cut or spec is None or isinstance(value, list | bool):
                continue
            least = spec.options.get("min")
            # A minimum of 0 often means "keep the other side's ratio" (ImageScale): leave those alone.
            if isinstance(value, int) and isinstance(least, int) and least >= 1:
                inputs[name] = least
    return prompt
