"""Where p2m keeps its caches (one project folder, never the home folder) and finds the configs it ships."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from p2m.errors import ConfigError

#: The YAML configs shipped inside the package (``configs/`` of the source tree).
CONFIGS_DIR = Path(__file__).resolve().parent / "configs"


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


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``tiny_pose2mesh``, ``pose2mesh_h36m``, ...), sorted."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml")) if CONFIGS_DIR.is_dir() else []


def find_config(spec: str | os.PathLike) -> Path:
    """A config file: ``spec`` itself when it is a file, else the shipped config of that name (``.yaml`` optional).

    Raises:
        ConfigError: neither, naming the shipped configs and the closest one.
    """
    path = Path(spec)
    if path.is_file():
        return path
    name = path.name[: -len(".yaml")] if path.name.endswith(".yaml") else path.name
    names = shipped_configs()
    if name in names and (len(path.parts) == 1 or not path.parent.exists()):
        return CONFIGS_DIR / f"{name}.yaml"
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ConfigError(
        f"{spec}: no such config file, nor a shipped config (shipped: {', '.join(names)}){hint}"
    )
