"""Starting or joining Ray, and the one pattern the batch stages share: an ordered map over work units."""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from p2m.errors import P2MError

logger = logging.getLogger(__name__)

#: ``--ray`` without an address: start a Ray instance on this machine.
LOCAL = "local"
INSTALL_HINT = "pip install 'p2m[ray]'"
#: Number of CPUs of a local Ray instance (default: all of this machine's).
CPUS_ENV = "P2M_RAY_CPUS"
#: Fault injection for tests: a file path. While that file exists, the first task to remove it kills its own
#: worker process (``os._exit``), so that Ray's retry of a lost worker is exercised for real. Read by workers,
#: so it must be set before Ray starts.
FAULT_ENV = "P2M_RAY_FAULT_FILE"
#: Retries of a task whose worker died (Ray re-runs it; work units are pure, so a retry adds nothing twice).
TASK_RETRIES = 3


class RayError(P2MError):
    """Ray is missing, or the cluster cannot be reached."""


def init(address: str | None = LOCAL, num_cpus: int | None = None) -> dict[str, float]:
    """Start a local Ray (``address`` None or ``"local"``) or join a cluster (``"auto"``, ``"ray://host:port"``,
    ``"host:port"``); reuse Ray when this process already started it. Returns the cluster's resources.

    Raises:
        RayError: Ray is not installed, or the cluster does not answer.
    """
    try:
        import ray
    except ImportError as exc:
        raise RayError(f"--ray needs Ray: {INSTALL_HINT}") from exc
    if not ray.is_initialized():
        try:
            if address in (None, "", LOCAL):
                cpus = num_cpus or int(os.environ.get(CPUS_ENV, 0)) or os.cpu_count() or 1
                ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING)
                logger.info("started a local Ray instance with %d CPUs", cpus)
            else:
                ray.init(address=address, logging_level=logging.WARNING)
                logger.info("joined the Ray cluster at %s", address)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise RayError(f"--ray {address or LOCAL}: cannot start or join Ray: {exc}") from exc
    return {k: float(v) for k, v in ray.cluster_resources().items()}


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus() -> int:
    import ray

    return int(ray.cluster_resources().get("GPU", 0))


def split_range(n: int, parts: int) -> list[tuple[int, int]]:
    """``[0, n)`` cut into at most ``parts`` contiguous non-empty ranges of near-equal size."""
    parts = max(1, min(parts, n))
    bounds = [n * i // parts for i in range(parts + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def maybe_fault() -> None:
    """Kill this worker process if the fault file named by ``P2M_RAY_FAULT_FILE`` is armed (tests only)."""
    armed = os.environ.get(FAULT_ENV)
    if not armed:
        return
    try:
        os.unlink(armed)  # exactly one task wins the file
    except FileNotFoundError:
        return
    logger.warning("fault injection: worker %d exits", os.getpid())
    os._exit(1)


def _call(func: Callable[..., Any], args: tuple) -> Any:
    maybe_fault()
    return func(*args)


def ordered_map(
    func: Callable[..., Any],
    args: Sequence[tuple],
    *,
    num_cpus: float = 1,
    num_gpus: float = 0,
    max_in_flight: int | None = None,
) -> Iterator[Any]:
    """``func(*a) for a in args`` as Ray tasks, yielded in the order of ``args``.

    At most ``max_in_flight`` tasks (default: twice the cluster's CPUs) are submitted or held at a time, so the
    driver's memory stays bounded whatever the number of units. A task whose worker dies is retried by Ray.
    ``func`` must be importable (a module-level function), its arguments and result picklable.
    """
    import ray

    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=TASK_RETRIES)(_call)
    limit = max_in_flight or 2 * cluster_cpus()
    pending: deque = deque()
    for a in args:
        pending.append(remote.remote(func, a))
        if len(pending) >= limit:
            yield ray.get(pending.popleft())
    while pending:
        yield ray.get(pending.popleft())
