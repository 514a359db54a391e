"""Native libraries (warp, MediaPipe's TFLite) print routine lines straight to file descriptor 2: route them to
the debug log and pass everything else through, so users see only what matters."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator

#: Lines MediaPipe's native code (TFLite, absl/glog) writes to stderr on every run: not news to the user.
_MEDIAPIPE_NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\]|INFO: Created TensorFlow Lite"
    r"|WARNING: All log messages before absl)"
)


def is_mediapipe_routine(line: str) -> bool:
    """True for MediaPipe's routine native log lines (``I0000 00:00:... landmark_projection_calculator.cc:...``)."""
    return bool(_MEDIAPIPE_NOISE.match(line))


@contextlib.contextmanager
def native_stderr_filtered(
    is_routine: Callable[[str], bool], logger: logging.Logger, live: bool = False
) -> Iterator[None]:
    """Capture what native code writes to fd 2 inside the block; log routine lines at debug, rewrite the rest.

    Args:
        is_routine: True for a line that is expected noise (it goes to ``logger.debug``).
        logger: where routine lines go.
        live: pass the rest through as it comes (through a pipe and a thread) instead of at the end, so that a
            progress bar on stderr keeps moving. Decide whether to draw one *before* the block: inside it,
            stderr is a pipe, not a terminal.
    """
    if live:
        with _filtered_live(is_routine, logger):
            yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
    for line in text.splitlines():
        if is_routine(line):
            logger.debug("%s", line)
        elif line.strip():
            sys.stderr.write(line + "\n")


@contextlib.contextmanager
def _filtered_live(is_routine: Callable[[str], bool], logger: logging.Logger) -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, saved, is_routine, logger), daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # closes the pipe's last write end: the thread sees end of file
        thread.join(timeout=10)
        os.close(saved)


def _forward(read_fd: int, out_fd: int, is_routine: Callable[[str], bool], logger: logging.Logger) -> None:
    """Copy ``read_fd`` to ``out_fd`` line by line, logging routine lines instead. A trailing partial line that
    starts with ``\\r`` (a progress bar's update) is written at once; other partial lines wait for their end."""
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as pipe:
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = re.split(rb"(?<=\n)|(?=\r)", pending)  # a line ends at \n; \r starts an update
            if pending.startswith(b"\r"):  # a progress bar's update: show it now (native code ends lines)
                lines.append(pending)
                pending = b""
            for raw in lines:
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                if text and is_routine(text):
                    logger.debug("%s", text)
                else:
                    os.write(out_fd, raw)
    if pending:
        os.write(out_fd, pending)
