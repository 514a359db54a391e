"""Where training runs: single-process or torchrun DDP set-up, the device and its autocast, rank-0-only output."""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from p2m.errors import ConfigError

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistInfo:
    """Where this process runs.

    Attributes:
        rank: global rank (0 when not distributed).
        world_size: number of processes (1 when not distributed).
        local_rank: rank on this node (selects the GPU).
        device: the training device (``cuda:<local_rank>`` or ``cpu``).
        distributed: whether a process group was initialised.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and shows progress (rank 0)."""
        return self.rank == 0


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` -> ``cuda:<local_rank>``; ``cuda:N`` as given (fails
    clearly without CUDA or device N)."""
    name, _, index = device.partition(":")
    if name not in DEVICES or (index and (name != "cuda" or not index.isdigit())):
        raise ConfigError(f"--device {device!r}: expected one of {list(DEVICES)} or cuda:N")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"--device {device}: this torch build or machine has no usable CUDA device; use --device cpu"
            )
        count = torch.cuda.device_count()
        gpu = int(index) if index else local_rank
        if gpu >= count:
            what = f"--device {device}" if index else f"LOCAL_RANK {local_rank}"
            raise ConfigError(f"{what} but only {count} CUDA devices are visible on this node")
        return torch.device("cuda", gpu)
    return torch.device("cpu")


def init_distributed(device: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Set up from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), else stay single-process.

    Uses NCCL on CUDA and gloo on the CPU. ``CUDA_VISIBLE_DEVICES`` is never touched: the GPU is chosen with
    ``torch.cuda.set_device(LOCAL_RANK)``.

    Args:
        device: ``auto``, ``cpu`` or ``cuda``.
        timeout_s: collective timeout.

    Returns:
        The :class:`DistInfo` of this process.
    """
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        logger.info("Not using distributed mode")
        return DistInfo(device=resolve_device(device))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device, local_rank)
    if world == 1:
        logger.info("Not using distributed mode (WORLD_SIZE=1)")
        return DistInfo(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            init_method="env://",
            timeout=timedelta(seconds=timeout_s),
            rank=rank,
            world_size=world,
        )
    logger.info("distributed: rank %d of %d (local rank %d, %s, %s)", rank, world, local_rank, backend, dev)
    return DistInfo(rank, world, local_rank, dev, True)


def cleanup(info: DistInfo) -> None:
    """Destroy the process group (if this module created one)."""
    if info.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op when single-process)."""
    if info.distributed:
        if info.device.type == "cuda":
            dist.barrier(device_ids=[info.device.index])
        else:
            dist.barrier()


def all_gather_object(info: DistInfo, obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` when single-process)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def autocast_context(device: torch.device, amp: str) -> Any:
    """bf16/fp16 autocast on CUDA per ``train.amp`` ("auto" = bf16 on CUDA); nothing on the CPU."""
    if device.type != "cuda" or amp == "off":
        return nullcontext()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    return torch.autocast("cuda", dtype=dtype)


class RankFilter(logging.Filter):
    """Drop records below WARNING on ranks other than 0, so that a K-process run logs like a single process."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def quiet_non_main(info: DistInfo) -> RankFilter | None:
    """Install a :class:`RankFilter` on the root logger's handlers of a non-zero rank; returns it (or None)."""
    if info.rank == 0:
        return None
    filt = RankFilter(info.rank)
    for handler in logging.getLogger().handlers:
        handler.addFilter(filt)
    return filt


def remove_filter(filt: RankFilter | None) -> None:
    """Undo :func:`quiet_non_main`."""
    if filt is None:
        return
    for handler in logging.getLogger().handlers:
        handler.removeFilter(filt)
