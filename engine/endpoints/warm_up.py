"""The cheapest request an endpoint accepts, for the run that loads its models before the server is ready.

A warm-up exists to load the weights and exercise every node once; the image it makes is thrown away.
At the template's defaults (1024x1024, 25 steps) it costs as much as a real request, minutes on a CPU,
and `/ready` waits for it. So the fields bound to the inputs a run's cost grows with (image size, batch,
sampling steps) take their smallest allowed value. They are found by the node inputs the fields set
(`sets`, or a derived table's targets), not by the fields' names, which each API spells its own way
(`steps`, `num_inference_steps`; `aspect_ratio` picks width and height from a table).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from engine.endpoints.fields import Field, InputRef
from engine.endpoints.spec import Endpoint, Params

COST_INPUTS = frozenset({"width", "height", "batch_size", "steps"})
"""Node inputs whose value the run time grows with: latent size, batch size, sampling steps."""


def _sets_cost_input(refs: Iterable[InputRef]) -> bool:
    return any(ref.input in COST_INPUTS for ref in refs)


def _smallest(field: Field) -> Any:
    """The least value the field accepts, or its default when it has no lower bound."""
    if field.enum is not None:
        return min(field.enum)
    if field.minimum is None:
        return field.default
    value = math.ceil(field.minimum)
    if field.multiple_of:
        value = -(-value // field.multiple_of) * field.multiple_of
    return value if field.check(value) is None else field.default


def _row_cost(row: Mapping[str, Any], targets: Mapping[str, tuple[InputRef, ...]]) -> float:
    """The product of a table row's values that set cost inputs (width x height for a size table)."""
    return math.prod(value for name, value in row.items() if _sets_cost_input(targets[name]))


def warm_up_params(endpoint: Endpoint) -> Params:
    """The endpoint's defaults with every cost-bearing field at its smallest allowed value."""
    values = dict(endpoint.defaults().values)
    for name, field in endpoint.fields.items():
        if field.random or field.accepted_only:
            continue
        derive = field.derive
        if derive is not None and field.enum is not None:
            if any(_sets_cost_input(refs) for refs in derive.targets.values()):
                values[name] = min(field.enum, key=lambda v: _row_cost(derive.row(v), derive.targets))
        elif field.type == "integer" and _sets_cost_input(field.sets):
            smallest = _smallest(field)
            if smallest is not None:
                values[name] = smallest
    return Params(values=values)
