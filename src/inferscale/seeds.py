"""Seeds drawn from a base seed and names (a question's id, a node's number), never from
positions: a resumed run, or the same question in another batch, samples exactly the same."""

from __future__ import annotations

import hashlib


def derived_seed(base: int, *names: str | int) -> int:
    """The seed of what `names` identify under the run's `base` seed, in 0 .. 2**30 - 1 (which
    every backend takes)."""
    digest = hashlib.sha256(":".join(map(str, (base, *names))).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x3FFFFFFF
