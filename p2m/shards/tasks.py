"""The work units of `build_shards`: one subject of one dataset, parsed and encoded, in order.

Parsing a subject's JSON files is most of the cost of writing pose-only shards, so ``workers > 1`` runs
whole subjects in worker processes. Task ``i`` goes to worker ``i % workers``; each worker runs its tasks in
order and streams chunks of encoded samples into its own bounded queue, and the writer reads the queues in
task order. So the shards are byte-identical to a single-process run, memory stays bounded (a worker that is
ahead blocks on its full queue), and nothing needs re-ordering.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import queue
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from p2m.errors import LayoutError, ShardError
from p2m.layout import exclusion_reason
from p2m.shards.columns import KEY_ONLY, encode_subject
from p2m.shards.encode import (
    Encoded,
    EncodeOptions,
    Job,
    SampleEncoder,
    camera_array,
    camera_json,
    sample_key,
    sanitize_key_part,
)

logger = logging.getLogger(__name__)

#: ``Encoded.skip`` of a sample that lies in an already written shard: only its key was made (defined in columns).
CHUNK = 256
_KEY_TAIL = re.compile(r"_a\d{3,}_sa\d{3,}_c\d{4,}_f\d{6,}_p\d{2,}$")


@dataclass
class SubjectTask:
    """One subject of one dataset folder.

    Attributes:
        index: position in the writing order.
        dataset: a :class:`p2m.layout.Dataset` restricted to this subject.
        name, subject: the dataset name and subject number.
        split: the split its samples go to (None: no split takes this subject).
        mode: ``"encode"``; ``"keys"`` (every sample lies in a kept shard: make keys only); ``"count"`` (no
            split: count the annotations).
    """

    index: int
    dataset: Any
    name: str
    subject: int
    split: str | None
    mode: str


def plan_tasks(
    datasets: Sequence[Any], split_of: dict[int | str, str], resume_after: dict[str, str]
) -> list[SubjectTask]:
    """One task per (dataset folder, dataset name, subject), in writing order.

    Args:
        datasets: opened :class:`p2m.layout.Dataset` objects.
        split_of: subject -> split (key ``"*"``: the split of every other subject).
        resume_after: split -> the last key of its kept shards. Tasks before the first one that can hold that
            key only make keys.
    """
    tasks: list[SubjectTask] = []
    for ds in datasets:
        for files in ds.subject_files:
            view = copy.copy(ds)
            view.subject_files = [files]
            split = split_of.get(files.subject, split_of.get("*"))
            mode = "encode" if split is not None else "count"
            tasks.append(SubjectTask(len(tasks), view, files.name, files.subject, split, mode))
    for split, key in resume_after.items():
        for task in tasks:
            if task.split != split:
                continue
            if _may_hold(task, key):
                break
            task.mode = "keys"
    return tasks


def _may_hold(task: SubjectTask, key: str) -> bool:
    """Whether ``key`` can belong to this task (by its ``{source}_s{subject}`` prefix)."""
    return _KEY_TAIL.sub("", key) == f"{sanitize_key_part(task.name)}_s{int(task.subject):03d}"


def run_task(task: SubjectTask, opts: EncodeOptions) -> Iterator[list[Encoded] | Counter[str]]:
    """Chunks of encoded samples of one subject, in file order; the last item is the task's stats Counter.

    Pose-only subjects in the plain shape take the columnar path (:mod:`p2m.shards.columns`, same bytes).
    """
    fast = encode_subject(task, opts)
    if fast is not None:
        yield from fast
        return
    stats: Counter[str] = Counter()
    chunk: list[Encoded] = []
    persons: Counter[Any] = Counter()
    cams: dict[int, tuple[Any, str, Any]] = {}
    encoder = SampleEncoder(opts)
    for sample in task.dataset.iter_samples():
        if task.mode == "count":
            stats["samples/skipped/no_split"] += 1
            continue
        img = sample.image
        person = persons[img.get("id")]
        persons[img.get("id")] += 1
        excluded = exclusion_reason(sample.annotation)
        if excluded:
            stats[f"samples/skipped/{excluded}"] += 1
            continue
        try:
            key = sample_key(
                sample.dataset,
                sample.subject,
                img["action_idx"],
                img["subaction_idx"],
                img["cam_idx"],
                img["frame_idx"],
                person,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LayoutError(
                f"{task.dataset.root}: dataset {sample.dataset!r} subject {sample.subject}: image id {img.get('id')}: "
                f"needs integer action_idx, subaction_idx, cam_idx and frame_idx for a shard key ({exc!r})"
            ) from exc
        assert task.split is not None
        if task.mode == "keys":
            enc = Encoded(task.split, key, b"", sample.dataset, skip=KEY_ONLY)
        else:
            cam = sample.camera
            cached = cams.get(id(cam))
            if cached is None or cached[0] is not cam:
                cached = cams[id(cam)] = (cam, camera_json(cam), camera_array(cam))
            enc = encoder.encode(Job(task.split, key, sample.dataset, person, sample, cached[1], cached[2]))
        enc.image_id = img.get("id")
        chunk.append(enc)
        if len(chunk) >= CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
    yield stats


def task_items(task: SubjectTask, opts: EncodeOptions) -> list[list[Encoded] | Counter[str]]:
    """Every item of :func:`run_task` as one list: the unit another executor runs (``p2m shard --ray``)."""
    return list(run_task(task, opts))


def iter_results(
    tasks: Sequence[SubjectTask], opts: EncodeOptions, workers: int = 1, map_tasks: Any = None
) -> Iterator[tuple[SubjectTask, list[Encoded] | Counter[str]]]:
    """``(task, chunk or stats)`` in task order, computed here, by ``workers`` processes, or by ``map_tasks``.

    ``map_tasks(func, args)``: an executor that yields ``func(*a)`` for each ``a`` of ``args`` in order (e.g.
    :func:`p2m.scale.common.ordered_map`); it runs :func:`task_items` per task.
    """
    if map_tasks is not None:
        for task, items in zip(tasks, map_tasks(task_items, [(t, opts) for t in tasks])):
            for item in items:
                yield task, item
        return
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            for item in run_task(task, opts):
                yield task, item
        return
    import multiprocessing

    ctx = multiprocessing.get_context("fork")  # the opened datasets are inherited, not pickled
    n = min(workers, len(tasks))
    queues = [ctx.Queue(maxsize=8) for _ in range(n)]
    procs = [
        ctx.Process(
            target=_worker,
            args=(w, n, tasks, opts, queues[w], os.getpid()),
            daemon=True,
            name=f"p2m-shard-{w}",
        )
        for w in range(n)
    ]
    for p in procs:
        p.start()
    try:
        for task in tasks:
            q = queues[task.index % n]
            while True:
                try:
                    item = q.get(timeout=5)
                except queue.Empty:
                    proc = procs[task.index % n]
                    if not proc.is_alive():
                        raise ShardError(
                            f"shard worker {proc.name} died (exit code {proc.exitcode}) on "
                            f"{task.name} subject {task.subject}"
                        ) from None
                    continue
                if item == "done":
                    break
                if isinstance(item, BaseException):
                    raise item
                yield task, item
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        for q in queues:
            q.close()
            q.cancel_join_thread()


def _worker(
    wid: int, n: int, tasks: Sequence[SubjectTask], opts: EncodeOptions, out: Any, parent: int
) -> None:
    try:
        for task in tasks[wid::n]:
            for item in run_task(task, opts):
                _put(out, item, parent)
            _put(out, "done", parent)
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            exc = ShardError(f"{type(exc).__name__}: {exc}")
        _put(out, exc, parent)


def _put(out: Any, item: Any, parent: int) -> None:
    """Put with backpressure; give up when the parent is gone (killed writers leave no blocked workers)."""
    while True:
        try:
            out.put(item, timeout=1)
            return
        except queue.Full:
            if os.getppid() != parent:
                os._exit(1)
