"""Where p2m keeps its caches: one project folder, never the home folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The p2m cache folder: ``$P2M_CACHE_DIR``, else ``.cache`` in the source checkout (or the working folder)."""
    env = os.environ.get("P2M_CACHE_DIR")
    if env:
        path = Path(env)
    else:
        checkout = Path(__file__).resolve().parent.parent
        path = checkout / ".cache" if (checkout / "pyproject.toml").exists() else Path.cwd() / ".p2m-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def configure_third_party_caches() -> Path:
    """Point anny, warp and matplotlib at folders inside :func:`cache_dir` unless the user set them."""
    root = cache_dir()
    os.environ.setdefault("ANNY_CACHE_DIR", str(root / "anny"))
    os.environ.setdefault("WARP_CACHE_PATH", str(root / "warp"))
    os.environ.setdefault("MPLCONFIGDIR", str(root / "matplotlib"))
    return root
