"""How much memory this process may use: the machine's RAM, or its container's limit when lower.

Defaults sized from memory (the output cache's) must see a container's limit: a pod limited to 8 GiB
on a 1 TiB host that sized a cache from the host would be killed for exceeding its limit.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_LIMIT_FILES = ("memory.max", "memory/memory.limit_in_bytes")
"""cgroup v2's limit, then v1's, below the cgroup root ("max" or a huge number mean none)."""


def physical_memory_bytes() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def cgroup_limit_bytes() -> int | None:
    """The container's memory limit, or None when there is none (or no cgroup file to read)."""
    return _cgroup_bytes(CGROUP_LIMIT_FILES)


def _cgroup_bytes(names: tuple[str, ...]) -> int | None:
    """The number in the first of the cgroup files (v2's, then v1's) that can be read, or None when none
    can or it holds no number ("max")."""
    for name in names:
        try:
            text = (CGROUP_ROOT / name).read_text().strip()
        except OSError:
            continue
        return int(text) if text.isdigit() else None
    return None


def available_memory_bytes() -> int:
    """Physical RAM, or the container's limit when that is lower."""
    physical = physical_memory_bytes()
    limit = cgroup_limit_bytes()
    return min(physical, limit) if limit is not None else physical


CGROUP_USAGE_FILES = ("memory.current", "memory/memory.usage_in_bytes")
MEMINFO = Path("/proc/meminfo")


def free_memory_bytes() -> int:
    """Memory a new allocation could still get: the kernel's estimate of available RAM, or what is left
    of the container's limit when that is less (what ComfyUI's /system_stats reports as ram_free)."""
    free = _meminfo_available()
    if free is None:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    limit, usage = cgroup_limit_bytes(), _cgroup_bytes(CGROUP_USAGE_FILES)
    if limit is not None and usage is not None:
        free = min(free, max(0, limit - usage))
    return free


def _meminfo_available() -> int | None:
    try:
        lines = MEMINFO.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        fields = value.split()
        if name == "MemAvailable" and fields and fields[0].isdigit():
            return int(fields[0]) * 1024
    return None
