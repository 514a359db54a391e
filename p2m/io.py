"""Atomic file writes (a killed process leaves the old file or the new one, never half of one) and JSON reading
that turns every malformed input into one P2MError."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _default_file_mode() -> int:
    """0o666 minus the process umask: what ``open()`` would give (mkstemp alone gives 0o600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename in it) to disk; a no-op where the filesystem does not allow it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the final file name. Its folder is created if needed.
        mode: ``"wb"`` or ``"w"``.
        encoding: text encoding for ``"w"`` (defaults to UTF-8).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        os.chmod(tmp, _FILE_MODE)
        if mode == "w":
            fh = os.fdopen(fd, "w", encoding=encoding or "utf-8", newline="")
        else:
            fh = os.fdopen(fd, "wb")
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_dir(target.parent)


def temp_files_of(path: str | os.PathLike) -> list[Path]:
    """The temporary files :func:`atomic_write` has left beside ``path`` (a killed writer leaves its own).

    Only the caller knows whether a writer may still be at work on one; lock before removing them.
    """
    target = Path(path)
    pattern = re.compile(rf"^\.{re.escape(target.name)}\.[A-Za-z0-9_]+\.tmp$")
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return []
    return sorted(target.parent / n for n in names if pattern.match(n) and (target.parent / n).is_file())


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_write(path, "w") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=indent, separators=(",", ":") if indent is None else None) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; any parse error (bad syntax, deep nesting, huge integers) names the file, line and column."""
    from p2m.errors import P2MError

    p = Path(path)
    try:
        with p.open("rb") as fh:
            raw = fh.read()
    except FileNotFoundError as exc:
        raise P2MError(f"{p}: file not found") from exc
    return loads_json(raw, str(p))


def loads_json(text: str | bytes, where: str) -> Any:
    """Parse JSON from untrusted input; every failure is a :class:`p2m.errors.P2MError` that starts with ``where``.

    Python's parser raises RecursionError on deep nesting and ValueError on integers over 4300 digits, not
    JSONDecodeError; both are turned into one-line messages with the line and column of the culprit.
    """
    from p2m.errors import P2MError

    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise P2MError(f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise P2MError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        depth, pos = _deepest(text)
        what = f"more than {MAX_JSON_DEPTH}" if depth > MAX_JSON_DEPTH else f"{depth}"
        raise P2MError(
            f"{where}: invalid JSON at {_line_col(text, pos)}: arrays/objects nested {what} levels deep"
        ) from None
    except (
        ValueError
    ) as exc:  # the only other ValueError of json: int() refusing a number of over 4300 digits
        pos = _long_int(text)
        if pos is None:
            raise P2MError(f"{where}: invalid JSON: {exc}") from None
        raise P2MError(
            f"{where}: invalid JSON at {_line_col(text, pos)}: an integer of more than "
            f"{_MAX_INT_DIGITS} digits"
        ) from None


#: Deepest nesting of arrays and objects that :func:`loads_json` promises to read (Python's limit is higher, but
#: depends on how deep the caller's stack already is).
MAX_JSON_DEPTH = 500
_MAX_INT_DIGITS = 4300
# A JSON token: a string (skipped whole, so brackets and digits inside strings do not count), a bracket, or a
# number whose integer part is longer than Python's int() accepts.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_LONG_INT = re.compile(
    r'"(?:[^"\\]|\\.)*"|(?<![\d.eE+-])(-?\d{' + str(_MAX_INT_DIGITS + 1) + r",})(?![\d.eE])"
)


def _deepest(text: str) -> tuple[int, int]:
    """(depth, offset) where nesting first exceeds :data:`MAX_JSON_DEPTH`, else of the deepest point."""
    depth = best = best_pos = 0
    for m in _TOKEN.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > best:
                best, best_pos = depth, m.start()
                if depth > MAX_JSON_DEPTH:
                    break
        elif c in "]}":
            depth -= 1
    return best, best_pos


def _long_int(text: str) -> int | None:
    """Offset of the first integer (outside strings) too long for ``int()``, or None."""
    for m in _LONG_INT.finditer(text):
        if m.group(1) is not None:
            return m.start(1)
    return None


def _line_col(text: str, pos: int) -> str:
    line_start = text.rfind("\n", 0, pos) + 1
    return f"line {text.count(chr(10), 0, pos) + 1} column {pos - line_start + 1}"


def is_int(value: Any) -> bool:
    """A JSON integer (``True`` and ``False`` are ints to Python, not to JSON)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A JSON number that converts to a finite float (a 400-digit integer does not: ``float()`` overflows)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False
