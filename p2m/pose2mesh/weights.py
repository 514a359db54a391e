"""Read a ``.safetensors`` weights file (``RUN/best.safetensors``): the one loader training and inference share."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from p2m.errors import CheckpointError

#: The ``format`` entry of the metadata p2m writes into its weights files.
WEIGHTS_FORMAT = "p2m-weights"

__all__ = ["WEIGHTS_FORMAT", "load_weights"]


def load_weights(
    path: str | os.PathLike, strict: bool = True
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, str]]:
    """Read a safetensors file on the CPU: ``(state_dict, config dict, metadata)``.

    Args:
        path: the ``.safetensors`` file.
        strict: require p2m's metadata (``format: p2m-weights`` and a ``config``); without it, any safetensors
            file is read and ``config`` is None when its metadata holds none (the caller looks for a config.yaml).

    Raises:
        CheckpointError: a missing or unreadable file, or (``strict``) one without p2m's metadata; names the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such weights file")
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
        tensors = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{p}: cannot read the safetensors file: {exc}") from exc
    if strict and (meta.get("format") != WEIGHTS_FORMAT or "config" not in meta):
        raise CheckpointError(
            f"{p}: not p2m weights (metadata format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r})"
        )
    try:
        config = json.loads(meta["config"]) if "config" in meta else None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{p}: the metadata's config is not JSON: {exc}") from exc
    return tensors, config, meta
