"""Run checkpoints (DESIGN.md Contract 3): a fixed key set, atomic writes, a disk check, strict and safe loading.

A checkpoint is one ``torch.save`` of a plain dict (``torch.load(weights_only=True)`` reads it: tensors, numbers,
strings, lists, tuples and dicts only)::

    format "p2m-checkpoint", version 1, p2m_version, torch_version,
    model        state dict of the unwrapped model (no "module." prefix)
    optimizer, scheduler, scaler          their state dicts
    rng          {"per_rank": [{"python", "numpy", "torch", "cuda"} for each rank], "rank_steps": [step of each rank]}
    epoch        0-based epoch of the last optimizer step;  epoch_done: whether that epoch's end (schedule step,
                 validation) has run
    step         global optimizer step (never reset)
    data         the shard reader's StreamState (epoch, batch, seed, mode, world_size, num_workers, batch_size)
    best         {"metric", "value" (None before the first validation), "epoch", "step"}
    config       the resolved Config as a dict;  world_size; init_posenet
    meters       the running loss meters of a part-done epoch (so a resumed epoch logs the same averages)

Files: ``RUN/checkpoints/last.pt`` (every N steps and each epoch), ``RUN/checkpoints/best.pt`` (a hard link to, or
a copy of, the last.pt written when validation improved), ``RUN/best.safetensors`` (weights + config in its
metadata). ``keep_last=K`` also keeps ``step-{step:08d}.pt`` snapshots, the K newest. Every file is serialised in
memory, checked against the free disk space, then written through :func:`p2m.io.atomic_write` (temp beside the
target, fsync, rename), so a crash leaves the previous file or the new one.

:func:`build_state` is the one place that spells the key set; the trainer hands it its collaborators.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from p2m.errors import CheckpointError
from p2m.io import atomic_write, write_bytes
from p2m.pose2mesh.config import Config, to_dict

logger = logging.getLogger(__name__)

FORMAT = "p2m-checkpoint"
VERSION = 1
KEYS: tuple[str, ...] = (
    "format", "version", "p2m_version", "torch_version", "model", "optimizer", "scheduler", "scaler", "rng",
    "epoch", "epoch_done", "step", "data", "best", "config", "world_size", "init_posenet", "meters",
)  # fmt: skip
CHECKPOINT_DIR = "checkpoints"
LAST, BEST = "last.pt", "best.pt"
WEIGHTS = "best.safetensors"
#: Bytes that must stay free on the disk after a checkpoint is written.
RESERVE_BYTES = 64 * 1024 * 1024
_CHUNK = 8 * 1024 * 1024
_SNAPSHOT_RE = re.compile(r"^step-(\d{8,})\.pt$")


# ------------------------------------------------------------------------------------------------ RNG states


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (python, numpy legacy global, torch CPU, CUDA)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all())
        if torch.cuda.is_available() and torch.cuda.is_initialized()
        else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        (n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            logger.warning(
                "checkpoint holds %d CUDA RNG states for %d devices; CUDA RNGs not restored",
                len(cuda),
                torch.cuda.device_count(),
            )


# ------------------------------------------------------------------------------------------------ writing


def run_paths(run_dir: str | os.PathLike) -> dict[str, Path]:
    """``{"run", "dir", "last", "best", "weights", "config", "metrics"}`` of a run folder."""
    run = Path(run_dir)
    ckpt = run / CHECKPOINT_DIR
    return {
        "run": run,
        "dir": ckpt,
        "last": ckpt / LAST,
        "best": ckpt / BEST,
        "weights": run / WEIGHTS,
        "config": run / "config.yaml",
        "metrics": run / "metrics.jsonl",
    }


def check_free_space(folder: Path, nbytes: int, what: str, reserve: int = RESERVE_BYTES) -> None:
    """Raise :class:`CheckpointError` unless ``nbytes`` + ``reserve`` fit on the disk holding ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < nbytes + reserve:
        raise CheckpointError(
            f"{what}: not enough free disk space in {folder}: the file needs {_mb(nbytes)} and "
            f"{_mb(reserve)} must stay free, but only {_mb(free)} is free. Nothing was written; free some space "
            "and rerun with --resume (the previous checkpoint is intact)."
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _write_file(path: Path, data: memoryview | bytes, what: str) -> None:
    """Disk check, then temp -> fsync -> rename."""
    check_free_space(path.parent, len(data), what)
    view = memoryview(data)
    with atomic_write(path, "wb") as fh:
        for start in range(0, len(view), _CHUNK):
            fh.write(view[start : start + _CHUNK])


def build_state(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    *,
    config: Config,
    rng: Mapping[str, Any],
    epoch: int,
    epoch_done: bool,
    step: int,
    data: Mapping[str, Any],
    best: Mapping[str, Any],
    world_size: int,
    init_posenet: str = "",
    meters: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict (every one of :data:`KEYS`) of a run at a step.

    Args:
        model: the unwrapped model (no DDP / compile wrapper: keys without ``module.``).
        optimizer, scheduler, scaler: their state dicts are stored.
        config: the resolved run config.
        rng: ``{"per_rank": [rng_state() of each rank], "rank_steps": [step of each rank]}``.
        epoch, epoch_done, step: where the run is (see the module docstring).
        data: the data source's ``state_dict()`` (its position).
        best: ``{"metric", "value", "epoch", "step"}``.
        world_size: ranks of the run; init_posenet: where PoseNet's weights came from.
        meters: running meters of a part-done epoch (empty at an epoch's end).
    """
    from p2m import __version__

    return {
        "format": FORMAT,
        "version": VERSION,
        "p2m_version": __version__,
        "torch_version": str(torch.__version__),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": dict(rng),
        "epoch": int(epoch),
        "epoch_done": bool(epoch_done),
        "step": int(step),
        "data": dict(data),
        "best": dict(best),
        "config": to_dict(config),
        "world_size": int(world_size),
        "init_posenet": str(init_posenet),
        "meters": dict(meters or {}),
    }


def serialize(state: Mapping[str, Any]) -> memoryview:
    """``torch.save`` of ``state`` into memory (its exact size is known before anything touches the disk)."""
    missing = [k for k in KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    _check_plain(state, "state")
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    return buf.getbuffer()


_PLAIN = (int, float, bool, str, bytes, type(None), torch.Tensor, torch.dtype, torch.device)


def _check_plain(obj: Any, where: str) -> None:
    """Raise TypeError at the first value ``torch.load(weights_only=True)`` would refuse (e.g. a str subclass)."""
    if isinstance(obj, (dict, list, tuple)) and type(obj) in (
        dict,
        list,
        tuple,
        collections.OrderedDict,
        collections.Counter,
    ):
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for k, v in items:
            _check_plain(v, f"{where}[{k!r}]")
    elif type(obj) not in _PLAIN and not isinstance(obj, torch.Tensor):
        raise TypeError(
            f"{where}: {type(obj).__name__} cannot be loaded with weights_only=True; store plain types"
        )


def save_checkpoint(
    run_dir: str | os.PathLike,
    state: Mapping[str, Any],
    *,
    best: bool = False,
    keep_last: int = 0,
    weights_metadata: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Write ``last.pt`` (and, when ``best``, ``best.pt`` + ``best.safetensors``; with ``keep_last``, a snapshot).

    Call on rank 0 only.

    Args:
        run_dir: the run folder.
        state: the full checkpoint (all of :data:`KEYS`).
        best: this state is the best so far.
        keep_last: also keep this many ``step-*.pt`` snapshots (0: none).
        weights_metadata: extra string metadata for ``best.safetensors``.

    Returns:
        ``{"last": bytes, ...}`` sizes written.

    Raises:
        CheckpointError: not enough free disk space (nothing is written then).
    """
    paths = run_paths(run_dir)
    data = serialize(state)
    sizes = {"last": len(data)}
    _write_file(paths["last"], data, str(paths["last"]))
    if best:
        _link_or_copy(paths["last"], paths["best"])
        sizes["best"] = len(data)
        sizes["weights"] = save_weights(
            paths["weights"],
            state["model"],
            state["config"],
            {**(weights_metadata or {}), "step": str(state["step"]), "epoch": str(state["epoch"])},
        )
    if keep_last > 0:
        snap = paths["dir"] / f"step-{int(state['step']):08d}.pt"
        _link_or_copy(paths["last"], snap)
        snaps = sorted(p for p in paths["dir"].iterdir() if _SNAPSHOT_RE.match(p.name))
        for old in snaps[:-keep_last]:
            old.unlink(missing_ok=True)
    return sizes


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` hold ``src``'s bytes atomically: a hard link (no bytes copied) renamed into place, else a copy."""
    tmp = dst.with_name(f".{dst.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        _write_file(dst, src.read_bytes(), str(dst))
        return
    os.replace(tmp, dst)


def save_weights(
    path: Path,
    model_state: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    metadata: Mapping[str, str] | None = None,
) -> int:
    """Write the weights (and the config, as JSON metadata) to a ``.safetensors`` file atomically; returns its size."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model_state.items()}
    meta = {
        "format": "p2m-weights",
        "version": str(VERSION),
        "config": json.dumps(config),
        **{k: str(v) for k, v in (metadata or {}).items()},
    }
    data = save(tensors, metadata=meta)
    check_free_space(path.parent, len(data), str(path))
    write_bytes(path, data)
    return len(data)


def remove_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary files a killed writer left in ``RUN/checkpoints`` and ``RUN``; returns what was removed."""
    paths = run_paths(run_dir)
    removed = []
    for folder in (paths["dir"], paths["run"]):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                p.unlink(missing_ok=True)
                removed.append(p)
    if removed:
        logger.info(
            "removed %d temporary file(s) left by an interrupted write: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


# ------------------------------------------------------------------------------------------------ loading


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a p2m checkpoint on the CPU with ``weights_only=True`` and check its key set.

    Raises:
        CheckpointError: missing, truncated or corrupt file, a file that is not a p2m checkpoint (e.g. the
            original Pose2Mesh's ``.pth.tar``), or another checkpoint version; the message names the file.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no such checkpoint file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{p}: cannot read the checkpoint ({type(exc).__name__}: {_load_reason(exc)}); the file is truncated, "
            "corrupt, or holds objects other than tensors, numbers and strings (p2m loads checkpoints with "
            "weights_only=True and never runs code from a file)"
        ) from exc
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        keys = sorted(obj)[:12] if isinstance(obj, dict) else type(obj).__name__
        hint = (
            " (it looks like an original Pose2Mesh checkpoint)"
            if isinstance(obj, dict) and "model_state_dict" in obj
            else ""
        )
        raise CheckpointError(
            f"{p}: not a p2m checkpoint{hint}; expected format {FORMAT!r}, found keys {keys}"
        )
    if obj.get("version") != VERSION:
        raise CheckpointError(
            f"{p}: checkpoint version {obj.get('version')!r}; this p2m reads version {VERSION}"
        )
    missing = [k for k in KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{p}: checkpoint lacks {missing}")
    return obj


_UNSAFE_ADVICE = (
    "weights_only",
    "can still be loaded",
    "safe_globals",
    "trust",
    "two options",
    "documentation",
)


def _load_reason(exc: BaseException) -> str:
    """The line of torch's load error that says what is wrong, without its advice on how to load unsafely."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    for line in lines:
        if (
            "Unsupported global" in line
        ):  # "WeightsUnpickler error: Unsupported global: GLOBAL x.Y was not ..."
            return line[line.index("Unsupported global") :].split(" was not an allowed global", 1)[0][:200]
    plain = [ln for ln in lines if not any(word in ln.lower() for word in _UNSAFE_ADVICE)]
    return plain[0][:200] if plain else type(exc).__name__


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, str]]:
    """Read ``best.safetensors``: ``(state_dict, config dict, metadata)``.

    Raises:
        CheckpointError: unreadable file or one without p2m's metadata.
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
    if meta.get("format") != "p2m-weights" or "config" not in meta:
        raise CheckpointError(
            f"{p}: not p2m weights (metadata format {meta.get('format')!r}, expected 'p2m-weights')"
        )
    return tensors, json.loads(meta["config"]), meta


def resolve_checkpoint(
    path: str | os.PathLike, prefer: tuple[str, ...] = ("best", "last", "weights")
) -> Path:
    """A checkpoint file from a file path or a run folder (``best.pt``, then ``last.pt``, then the weights).

    Raises:
        CheckpointError: nothing usable at ``path``.
    """
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        paths = run_paths(p)
        for key in prefer:
            if paths[key].is_file():
                return paths[key]
        raise CheckpointError(
            f"{p}: a folder without {CHECKPOINT_DIR}/{BEST}, {CHECKPOINT_DIR}/{LAST} or {WEIGHTS}"
        )
    raise CheckpointError(f"{p}: no such checkpoint file or run folder")


def load_model_state(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """``(state_dict, config dict, info)`` from a ``.pt`` checkpoint, a ``.safetensors`` file or a run folder.

    ``info`` holds ``path``, ``epoch``, ``step`` and ``best`` where known. ``default`` is the shipped model.
    """
    from p2m.pose2mesh.pretrained import resolve

    p = resolve_checkpoint(resolve(path))
    if p.suffix == ".safetensors":
        state, config, meta = load_weights(p)
        info = {
            "path": str(p),
            "epoch": _int_or_none(meta.get("epoch")),
            "step": _int_or_none(meta.get("step")),
        }
        return state, config, info
    ckpt = load_checkpoint(p)
    info = {"path": str(p), "epoch": ckpt["epoch"], "step": ckpt["step"], "best": ckpt["best"]}
    return ckpt["model"], ckpt["config"], info


def _int_or_none(text: str | None) -> int | None:
    with contextlib.suppress(TypeError, ValueError):
        return int(text)  # type: ignore[arg-type]
    return None


def disk_usage(run_dir: str | os.PathLike) -> int:
    """Bytes the run's checkpoint files occupy on disk (hard links counted once)."""
    paths = run_paths(run_dir)
    seen: set[tuple[int, int]] = set()
    total = 0
    files = [paths["weights"], *(paths["dir"].iterdir() if paths["dir"].is_dir() else [])]
    for f in files:
        if not f.is_file():
            continue
        st = f.stat()
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        total += st.st_size
    return total


# ------------------------------------------------------------------------------------------------ run folders

#: Config keys a resumed run may change (they do not change the numbers the run computes, or extend it).
RESUME_MAY_CHANGE = ("train.epochs", "train.log_every", "train.ckpt_every_steps", "train.num_workers",
                     "train.compile", "train.val_batch_size", "train.data")  # fmt: skip


def config_diff(saved: dict[str, Any], given: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """``(dotted key, saved value, given value)`` for every leaf that differs."""
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(saved) | set(given)):
        a, b = saved.get(key), given.get(key)
        path = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_diff(a, b, path + ".")
        elif a != b:
            out.append((path, a, b))
    return out


def check_resume_config(saved: dict[str, Any], cfg: Config, where: Path) -> None:
    """Refuse to resume with a config whose numbers differ from the run's (a few keys may change; logged)."""
    diff = config_diff(saved, to_dict(cfg))
    blocking = [d for d in diff if d[0] not in RESUME_MAY_CHANGE]
    if blocking:
        lines = "\n".join(f"  {k}: {a!r} in the run, {b!r} now" for k, a, b in blocking)
        raise CheckpointError(
            f"{where}: --resume with another config than the run was started with:\n{lines}\n"
            "Resume with the run's own config (omit --config, or pass RUN/config.yaml) or start a new run with "
            f"another --out. Only {', '.join(RESUME_MAY_CHANGE)} may change on resume."
        )
    for k, a, b in diff:
        logger.warning("resuming with %s changed: %r -> %r", k, a, b)


def load_init(model: torch.nn.Module, source: str | Path) -> str:
    """Start every weight of ``model`` from a run folder, ``.pt``, ``.safetensors`` or ``default`` (the shipped
    model), for fine-tuning; the configs' networks must match (strict)."""
    state, _, info = load_model_state(source)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{info['path']}: its weights do not fit the model of this config (--init needs the "
            f"same model section): {exc}"
        ) from exc
    logger.info("model initialised from %s (step %s)", info["path"], info.get("step"))
    return str(info["path"])


def load_posenet(model: torch.nn.Module, source: str | Path) -> str:
    """Copy PoseNet weights from a run folder, ``.pt`` or ``.safetensors`` into ``model.posenet``."""
    state, _, info = load_model_state(source)
    sub = {k[len("posenet.") :]: v for k, v in state.items() if k.startswith("posenet.")}
    if not sub:
        raise CheckpointError(f"{info['path']}: holds no posenet.* weights")
    try:
        model.posenet.load_state_dict(sub)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{info['path']}: PoseNet weights do not fit model.posenet of this config: {exc}"
        ) from exc
    logger.info("PoseNet initialised from %s (step %s)", info["path"], info.get("step"))
    return str(info["path"])


def prepare_run(run: Path, cfg: Config, resume: bool) -> dict[str, Any] | None:
    """Check the run folder; returns the checkpoint to resume from (None: a fresh start)."""
    paths = run_paths(run)
    if not resume:
        if paths["last"].exists() or (paths["metrics"].exists() and paths["metrics"].stat().st_size):
            raise CheckpointError(
                f"{run} already holds a run ({paths['last'].relative_to(run) if paths['last'].exists() else 'metrics.jsonl'}); "
                "pass --resume to continue it, or choose another --out"
            )
        return None
    if paths["last"].exists():
        state = load_checkpoint(paths["last"])
        check_resume_config(state["config"], cfg, paths["last"])
        return state
    if paths["config"].exists():
        from p2m.pose2mesh.config import load_config

        check_resume_config(to_dict(load_config(paths["config"])), cfg, paths["config"])
    logger.warning("--resume: %s has no %s yet; starting the run from the beginning", run, paths["last"].name)
    return None
