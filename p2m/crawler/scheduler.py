"""Per-host politeness: a slot per ``scheme://host:port`` with its own queue, concurrency and delay."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from p2m.crawler.frontier import Item
from p2m.crawler.robots import RobotsRules
from p2m.crawler.urls import host_key

PRIORITY = {"sitemap": 0, "feed": 0, "auto": 1, "image": 2, "page": 3}


@dataclass
class Slot:
    """One host's politeness state.

    Attributes:
        key: ``scheme://host:port``.
        concurrency: requests in flight allowed (1 once robots.txt sets a Crawl-delay).
        min_delay: robots.txt Crawl-delay, never undercut by the jitter.
        active: requests in flight now.
        next_start: monotonic time before which no request to this host starts.
        ready: heap of ``(priority, seq, item)`` that may start now.
        delayed: heap of ``(not_before wall time, seq, item)`` waiting for a retry time.
        robots_state: ``needed``, ``pending`` or ``ready``.
        robots: the host's rules once read.
        errors_in_row: consecutive connection-level failures.
        dead_reason: set when the host stopped answering; its URLs then fail without a request.
    """

    key: str
    concurrency: int
    min_delay: float = 0.0
    active: int = 0
    next_start: float = 0.0
    ready: list = field(default_factory=list)
    delayed: list = field(default_factory=list)
    robots_state: str = "needed"
    robots: RobotsRules | None = None
    errors_in_row: int = 0
    dead_reason: str = ""

    def queued(self) -> int:
        return len(self.ready) + len(self.delayed)


@dataclass
class Task:
    """What a worker does next: read robots.txt of ``slot`` (``item`` None) or fetch ``item``."""

    slot: Slot
    item: Item | None = None
    released: bool = False


class Scheduler:
    """Hands tasks to workers so that every host keeps its concurrency limit and its delay.

    One dispatcher coroutine (:meth:`run`) scans the hosts that have work, in round-robin
    order, and hands at most one task per idle worker; a task's host has a free place, its
    robots.txt is read (the robots task comes first), and its delay since the last request start
    has passed: ``delay * U(0.5, 1.5)``, never below the host's Crawl-delay.

    Args:
        workers: number of worker coroutines that call :meth:`next`.
        per_host: requests in flight per host.
        delay: base delay between request starts on one host, seconds.
        admit: ``admit(item) -> bool``; False keeps the item queued (page and image limits).
        seed: random seed for the delay jitter.
    """

    def __init__(
        self,
        workers: int,
        per_host: int,
        delay: float,
        admit: Callable[[Item], bool],
        seed: int | None = None,
    ) -> None:
        self.workers = workers
        self.per_host = per_host
        self.delay = delay
        self.admit = admit
        self.rng = random.Random(seed)
        self.slots: dict[str, Slot] = {}
        self._work: dict[str, Slot] = {}
        self._seq = itertools.count()
        self._out: asyncio.Queue[Task | None] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._idle = 0
        self.active = 0
        self.closed = False
        #: Keep running when nothing is left (more URLs may be pushed from outside) until :meth:`close`.
        self.linger = False
        #: With ``linger``: True while nothing is in flight and nothing can start (what ends a plain run).
        self.idle = False

    # -- queue side --------------------------------------------------------------------------
    def slot_for(self, url: str) -> Slot:
        """The slot of ``url``'s host (created on first use)."""
        key = host_key(url)
        slot = self.slots.get(key)
        if slot is None:
            slot = self.slots[key] = Slot(key, self.per_host)
        return slot

    def push(self, item: Item) -> None:
        """Queue ``item`` on its host; it waits until ``item.not_before`` (wall clock) when that is set."""
        slot = self.slot_for(item.url)
        if item.not_before > time.time():
            heapq.heappush(slot.delayed, (item.not_before, next(self._seq), item))
        else:
            heapq.heappush(
                slot.ready, (PRIORITY.get(item.kind, 3) + item.depth * 0.01, next(self._seq), item)
            )
        self._work[slot.key] = slot
        self.idle = False
        self._changed.set()

    def hold_host(self, slot: Slot, seconds: float) -> None:
        """No new request to ``slot``'s host for ``seconds`` (Retry-After, backoff)."""
        slot.next_start = max(slot.next_start, time.monotonic() + seconds)

    def queued(self) -> int:
        """URLs waiting (ready or delayed) over all hosts."""
        return sum(s.queued() for s in self._work.values())

    def close(self) -> None:
        """Stop handing out tasks; workers finish what they hold and then get None."""
        self.closed = True
        self._changed.set()

    # -- worker side -------------------------------------------------------------------------
    async def next(self) -> Task | None:
        """The next task for a worker, or None when the crawl is over."""
        self._idle += 1
        self._changed.set()
        try:
            return await self._out.get()
        finally:
            self._idle -= 1

    def release_host(self, task: Task) -> None:
        """``task`` no longer uses its host (its response is read); the host may take another request."""
        if not task.released:
            task.released = True
            task.slot.active -= 1
            self._changed.set()

    def done(self, task: Task) -> None:
        """A worker finished ``task`` (its results, e.g. new URLs, are queued)."""
        self.release_host(task)
        self.active -= 1
        self._changed.set()

    async def run(self) -> None:
        """The dispatcher loop; returns when nothing is in flight and nothing can start any more."""
        while True:
            self._changed.clear()
            if self.closed:
                break
            handed, wake, starved = self._dispatch()
            self.idle = False
            if handed:
                await asyncio.sleep(0)  # let workers pick up, then scan again
                continue
            if self.active == 0 and wake is None and not starved and self._out.empty():
                if not self.linger:
                    break
                self.idle = True
            try:
                await asyncio.wait_for(self._changed.wait(), timeout=wake)
            except asyncio.TimeoutError:
                pass
        for _ in range(self.workers):
            self._out.put_nowait(None)

    def _dispatch(self) -> tuple[int, float | None, bool]:
        """One scan: hand out tasks; returns (tasks handed, seconds until a timed wake-up, work waits for a worker)."""
        now, wall = time.monotonic(), time.time()
        budget = self._idle - self._out.qsize()
        handed = 0
        starved = False
        wake: float | None = None

        def soon(t: float) -> None:
            nonlocal wake
            t = max(t, 0.001)
            wake = t if wake is None else min(wake, t)

        for key in list(self._work):
            slot = self._work[key]
            while slot.delayed and slot.delayed[0][0] <= wall:
                _, seq, item = heapq.heappop(slot.delayed)
                heapq.heappush(slot.ready, (PRIORITY.get(item.kind, 3) + item.depth * 0.01, seq, item))
            if slot.delayed:
                soon(slot.delayed[0][0] - wall)
            if not slot.ready:
                if not slot.delayed:
                    del self._work[key]
                continue
            if budget <= 0:
                starved = True
                continue
            if slot.robots_state == "pending":
                continue
            if slot.dead_reason:  # fail fast: no request is made
                task = Task(slot, heapq.heappop(slot.ready)[2])
            else:
                if slot.active >= slot.concurrency:
                    continue
                if slot.next_start > now:
                    soon(slot.next_start - now)
                    continue
                if slot.robots_state == "needed":
                    slot.robots_state = "pending"
                    task = Task(slot, None)
                else:
                    if not self.admit(slot.ready[0][2]):
                        continue
                    task = Task(slot, heapq.heappop(slot.ready)[2])
                jitter = self.delay * self.rng.uniform(0.5, 1.5)
                slot.next_start = now + max(jitter, slot.min_delay)
            slot.active += 1
            self.active += 1
            budget -= 1
            handed += 1
            self._out.put_nowait(task)
            del self._work[key]  # round robin: this host goes to the back
            self._work[key] = slot
        return handed, wake, starved
