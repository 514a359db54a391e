"""A flat counter with slash keys (``fetch/status/200``) that every crawler part writes to."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

MAX_MESSAGE_KEYS = 1000
MAX_MESSAGE_CHARS = 200


class Stats:
    """Counters, maxima and a capped error-message counter for one crawl run.

    Keys are flat strings with slashes, e.g. ``fetch/status/200``, ``robots/forbidden``,
    ``image/rejected/too_small``. Error messages are counted separately under at most
    ``max_messages`` distinct keys, each cut to ``MAX_MESSAGE_CHARS`` characters, so a crawl of
    millions of failing URLs cannot grow the stats without bound.
    """

    def __init__(self, max_messages: int = MAX_MESSAGE_KEYS) -> None:
        self.values: Counter[str] = Counter()
        self.maxima: dict[str, float] = {}
        self.messages: Counter[str] = Counter()
        self.max_messages = max_messages
        self.start_time = time.time()
        self.finish_time: float | None = None
        self.finish_reason: str | None = None

    def inc(self, key: str, count: int = 1) -> None:
        """Add ``count`` to ``key``."""
        self.values[key] += count

    def get(self, key: str, default: int = 0) -> int:
        """The value of ``key`` (``default`` when never counted)."""
        return self.values.get(key, default)

    def max_value(self, key: str, value: float) -> None:
        """Keep the largest ``value`` seen for ``key``."""
        if value > self.maxima.get(key, float("-inf")):
            self.maxima[key] = value

    def message(self, text: str) -> None:
        """Count one error message; new messages past the cap go to ``<other>``."""
        text = " ".join(text.split())[:MAX_MESSAGE_CHARS]
        if text in self.messages or len(self.messages) < self.max_messages:
            self.messages[text] += 1
        else:
            self.messages["<other>"] += 1

    def finish(self, reason: str) -> None:
        """Record the end time and why the crawl stopped (``finished``, ``max_images``, ``interrupted``...)."""
        self.finish_time = time.time()
        self.finish_reason = reason

    def elapsed(self) -> float:
        """Seconds since the run started (until :meth:`finish` once it is called)."""
        return (self.finish_time or time.time()) - self.start_time

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: start/finish times, finish reason, counters, maxima, top error messages."""
        return {
            "start_time": self.start_time,
            "finish_time": self.finish_time,
            "elapsed_s": round(self.elapsed(), 3),
            "finish_reason": self.finish_reason,
            "counters": dict(sorted(self.values.items())),
            "maxima": dict(sorted(self.maxima.items())),
            "error_messages": dict(self.messages.most_common(100)),
        }
