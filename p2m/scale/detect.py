"""``p2m annotate detect --ray``: batches of images detected by Ray tasks; this process numbers and writes them.

Workers place the image files in ``out/images`` (so ``out`` must be on a filesystem every node sees) and
return the records; the writer assigns ``cam_idx`` / ``frame_idx`` and ids in batch order, as a local run does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from p2m.annotate import detect as stage
from p2m.scale import common

_DETECTORS: dict[tuple, Any] = {}  # one MediaPipe graph per worker process and setting, reused across tasks


def _detector(key: tuple[int, int, int]) -> Any:
    if key not in _DETECTORS:
        _DETECTORS[key] = stage.make_detector(*key)
    return _DETECTORS[key]


def describe(key: tuple[int, int, int]) -> str:
    """The detector as the workers have it (also checks that they can load MediaPipe)."""
    return _detector(key).description


def detect_batch(
    items: list[stage.SourceImage], images_dir: str, min_score: float, key: tuple[int, int, int]
) -> tuple[list, Any]:
    """One Ray task: :func:`p2m.annotate.detect.detect_images` on a batch."""
    return stage.detect_images(items, Path(images_dir), _detector(key), min_score)


def detect(
    src: str | Path,
    out: str | Path,
    *,
    address: str | None = common.LOCAL,
    name: str = "photos",
    min_score: float = stage.MIN_PERSON_SCORE,
    batch: int = 256,
    model_complexity: int = 1,
    progress: bool | None = None,
    max_people: int = 20,
    grid: int = 2,
) -> dict[str, Any]:
    """:func:`p2m.annotate.detect.detect` with the detection on Ray; same dataset files.

    Batches are at most ``batch`` images and small enough to give every CPU of the cluster a few of them.
    """
    common.init(address)
    images_dir = str(Path(out) / stage.IMAGES_DIR)
    key = (max_people, grid, model_complexity)
    described = next(common.ordered_map(describe, [(key,)]))

    def executor(batches: list[list[stage.SourceImage]]):
        items = [it for b in batches for it in b]
        size = max(1, min(batch, -(-len(items) // (4 * common.cluster_cpus()))))
        work = [(items[i : i + size], images_dir, min_score, key) for i in range(0, len(items), size)]
        return common.ordered_map(detect_batch, work)

    return stage.detect(
        src,
        out,
        name=name,
        min_score=min_score,
        batch=batch,
        model_complexity=model_complexity,
        progress=progress,
        max_people=max_people,
        grid=grid,
        map_batches=(described, executor),
    )
