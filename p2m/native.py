"""Native libraries (warp, MediaPipe's TFLite) print routine lines straight to file descriptor 2: route them to
the debug log and pass everything else through, so users see only what matters."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def native_stderr_filtered(is_routine: Callable[[str], bool], logger: logging.Logger) -> Iterator[None]:
    """Capture what native code writes to fd 2 inside the block; log routine lines at debug, rewrite the rest.

    Args:
        is_routine: True for a line that is expected noise (it goes to ``logger.debug``).
        logger: where routine lines go.
    """
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
