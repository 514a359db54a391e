"""Native stderr filtering: routine lines written to fd 2 go to the debug log, the rest reaches stderr."""

from __future__ import annotations

import logging
import os

from p2m.native import native_stderr_filtered


def test_routine_lines_are_logged_and_others_pass_through(capfd, caplog):
    log = logging.getLogger("p2m.test.native")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        with native_stderr_filtered(lambda line: line.startswith("I1126"), log):
            os.write(2, b"I1126 routine delegate line\nreal problem: disk full\n")
    err = capfd.readouterr().err
    assert "real problem: disk full" in err
    assert "routine delegate line" not in err
    assert any("routine delegate line" in r.getMessage() for r in caplog.records)
    assert not any("disk full" in r.getMessage() for r in caplog.records)
