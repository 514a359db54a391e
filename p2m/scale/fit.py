"""``p2m annotate fit --ray``: chunks of people fitted by Ray tasks (on GPUs when the cluster has them).

This process plans the people, applies the results in chunk order and rewrites the subject files, exactly as a
local run does; only the solver runs in the workers (each keeps its fitter between tasks).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from p2m.annotate import fit as stage
from p2m.scale import common


def fit(
    dataset: str | Path,
    *,
    address: str | None = common.LOCAL,
    device: str = "auto",
    gpus_per_task: float = 1.0,
    **options: Any,
) -> dict[str, Any]:
    """:func:`p2m.annotate.fit.fit_bodies` with the solver on Ray.

    With ``device`` ``"auto"`` each task asks Ray for ``gpus_per_task`` GPUs when the cluster has any (and fits
    on CUDA there), else for one CPU. The dataset folder must be readable at the same path on this machine only:
    workers get the 2D observations as arguments and return the fits.
    """
    common.init(address)
    gpus = common.cluster_gpus() if device in ("auto",) or device.startswith("cuda") else 0
    if device.startswith("cuda") and not gpus:
        raise common.RayError(f"--device {device}: the Ray cluster has no GPU; use --device auto or cpu")
    num_gpus = gpus_per_task if gpus else 0
    worker_device = "cuda" if gpus else "cpu"
    executor = partial(
        common.ordered_map,
        num_cpus=1,
        num_gpus=num_gpus,
        max_in_flight=2 * max(1, int(gpus / gpus_per_task)) if gpus else None,
    )
    stats = stage.fit_bodies(dataset, device=worker_device, map_chunks=executor, **options)
    stats["device"] = f"ray ({worker_device}, {gpus} GPU(s) in the cluster)"
    return stats
