"""WebDataset shards (DESIGN.md Contract 2): write them from datasets, verify them, summarise them, stream them.

``build_shards``, ``verify_shards`` and ``shard_info`` need no torch; the streaming reader (``ShardStream``,
``ShardLoader``, ``make_loader``, ``StreamState``) imports torch, so it is loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from p2m.shards.index import SCHEMA_VERSION, load_index, shard_info
from p2m.shards.verify import VerifyReport, verify_shards
from p2m.shards.write import build_shards

_LAZY = {
    "ShardStream": "p2m.shards.read",
    "ShardLoader": "p2m.shards.read",
    "StreamState": "p2m.shards.read",
    "make_loader": "p2m.shards.read",
    "collate": "p2m.shards.read",
}

__all__ = [
    "SCHEMA_VERSION",
    "ShardLoader",
    "ShardStream",
    "StreamState",
    "VerifyReport",
    "build_shards",
    "collate",
    "load_index",
    "make_loader",
    "shard_info",
    "verify_shards",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'p2m.shards' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
