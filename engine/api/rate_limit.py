"""The Retry-After a rate-limited request is answered with (the limits are the job store's)."""

from __future__ import annotations

import math


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
