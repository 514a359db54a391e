"""The pretrained model shipped inside the package, and the name ``default`` that selects it wherever a checkpoint
or run is taken (``p2m infer default``, ``p2m eval default``, ``p2m train --init default``).

The shipped files live in ``p2m/data/models/``: ``<name>.safetensors`` (p2m weights: tensors plus the resolved
config as JSON metadata, floating tensors stored as float16 to stay under :data:`MAX_BYTES`; loading casts them
back to the model's float32) and ``<name>.md``, the model card. :func:`export_weights` writes such a file from a
run or checkpoint.
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any

from p2m.errors import CheckpointError

logger = logging.getLogger(__name__)

#: The name that selects the shipped model.
DEFAULT = "default"
#: Shipped model names -> file stem in ``p2m/data/models/``.
SHIPPED: dict[str, str] = {DEFAULT: "pose2mesh_anny1229"}
#: Largest shipped weights file (bytes): the package stays small.
MAX_BYTES = 5 * 1024 * 1024


def models_dir() -> Path:
    """``p2m/data/models`` inside the installed package."""
    return Path(str(resources.files("p2m") / "data" / "models"))


def is_shipped_name(spec: str | os.PathLike | None) -> bool:
    """Whether ``spec`` names a shipped model (``"default"``) rather than a path (write ``./default`` for a folder)."""
    return spec is not None and str(spec) in SHIPPED


def shipped_path(name: str = DEFAULT, folder: str | os.PathLike | None = None) -> Path:
    """The weights file of shipped model ``name``.

    Args:
        name: a key of :data:`SHIPPED`.
        folder: where to look (default :func:`models_dir`).

    Raises:
        CheckpointError: an unknown name, or the file is not in this installation.
    """
    if name not in SHIPPED:
        raise CheckpointError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED)}")
    path = Path(folder or models_dir()) / f"{SHIPPED[name]}.safetensors"
    if not path.is_file():
        raise CheckpointError(
            f"{path}: the shipped model {name!r} is not in this installation (reinstall p2m, "
            "or train one: python scripts/train_release.py)"
        )
    return path


def resolve(spec: str | os.PathLike, folder: str | os.PathLike | None = None) -> Path:
    """A checkpoint argument as a path: the shipped weights for ``"default"``, else ``spec`` itself."""
    return shipped_path(str(spec), folder) if is_shipped_name(spec) else Path(spec)


def model_card(name: str = DEFAULT, folder: str | os.PathLike | None = None) -> Path:
    """The model card (Markdown) of shipped model ``name``."""
    return shipped_path(name, folder).with_suffix(".md")


def export_weights(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    half: bool = True,
    metadata: dict[str, Any] | None = None,
    max_bytes: int | None = MAX_BYTES,
) -> int:
    """Write the weights of a run folder or checkpoint as a shippable p2m-weights ``.safetensors``.

    Args:
        source: run folder (its best.pt, else last.pt, else best.safetensors), ``.pt`` or ``.safetensors``.
        out: the file to write (atomically).
        half: store floating tensors as float16 (halves the file; the model casts back on load).
        metadata: extra string metadata (e.g. the metrics of the model card).
        max_bytes: refuse to write a larger file (None: no limit).

    Returns:
        The file size in bytes.

    Raises:
        CheckpointError: an unusable source, or a file over ``max_bytes``.
    """
    import torch

    from p2m.pose2mesh.checkpoint import load_model_state, save_weights

    state, config, info = load_model_state(source)
    tensors = {k: (v.to(torch.float16) if half and v.is_floating_point() else v) for k, v in state.items()}
    meta = {
        "source": str(info["path"]),
        "epoch": str(info.get("epoch")),
        "step": str(info.get("step")),
        "dtype": "float16" if half else "float32",
        **{k: str(v) for k, v in (metadata or {}).items()},
    }
    size = sum(t.numel() * t.element_size() for t in tensors.values())
    if max_bytes is not None and size > max_bytes:
        raise CheckpointError(
            f"{info['path']}: {size / 1e6:.1f} MB of weights, over the {max_bytes / 1e6:.1f} MB "
            "a shipped model may have; use a smaller config"
        )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_weights(out, tensors, config, meta)
