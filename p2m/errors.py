"""The exceptions p2m raises on bad input; the CLI prints them without a traceback."""

from __future__ import annotations

from typing import Any


class P2MError(Exception):
    """Base class: a problem with the user's input, files or environment, with a message that says where."""

    def __str__(self) -> str:
        # Readers append the shard URL to ``args`` (webdataset's habit): keep the message one readable line.
        if len(self.args) > 1 and isinstance(self.args[0], str):
            extra = [str(a) for a in self.args[1:] if str(a) not in self.args[0]]
            return self.args[0] + (f" ({', '.join(extra)})" if extra else "")
        return super().__str__()


def error_line(exc: BaseException) -> str:
    """The one line the CLI prints for ``exc``; for an error re-raised from a DataLoader worker (whose message is
    the worker's traceback) that is the original error's own message."""
    text = str(exc)
    if "\nOriginal Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        head, sep, rest = last.partition(": ")
        text = rest if sep and head.rsplit(".", 1)[-1] == type(exc).__name__ else last
    return text


class ConfigError(P2MError):
    """A config file or option holds an unknown key or an invalid value."""


class LayoutError(P2MError):
    """A dataset folder does not follow the layout (DESIGN.md, Contract 1)."""


class ShardError(P2MError):
    """A shard set is missing, corrupt or inconsistent with its index (Contract 2)."""


class CheckpointError(P2MError):
    """A run folder or checkpoint cannot be used (Contract 3)."""


class BodyModelError(P2MError):
    """The body model cannot be built: missing files, unknown topology or backend."""


class CrawlError(P2MError):
    """A crawl cannot start or resume: bad seeds, a broken journal, an unusable output folder."""


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters with its full length named, so that a
    hostile file's 400-digit number or megabyte list stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} characters)"
