"""``p2m shard --ray``: subjects parsed and encoded by Ray tasks; this process cuts the shards and keeps the index.

The writer takes the encoded samples in subject order, so shard boundaries, keys, tar bytes and ``index.json``
are those of a local run; ``index.json`` stays the one commit record (a rerun resumes after its last shard).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from p2m.scale import common


def build_shards(
    datasets: Sequence[str | Path], out: str | Path, *, address: str | None = common.LOCAL, **options: Any
) -> dict[str, Any]:
    """:func:`p2m.shards.build_shards` with the per-subject encoding on Ray (``workers`` is ignored).

    Dataset folders must be readable at the same path on every node.
    """
    from p2m.shards import build_shards as local_build

    common.init(address)
    options.pop("workers", None)
    stats = local_build(datasets, out, map_tasks=common.ordered_map, **options)
    return stats
