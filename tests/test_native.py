"""Native stderr filtering: routine lines written to fd 2 go to the debug log, the rest reaches stderr."""

from __future__ import annotations

import logging
import os
import time

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


def test_live_filter_passes_partial_lines_at_once_and_drops_mediapipe_noise(capfd, caplog):
    from p2m.native import is_mediapipe_routine

    noise = (
        b"I0000 00:00:1733472000.123456   4242 inference_feedback_manager.cc:114] Feedback manager requires\n"
        b"W0000 00:00:1733472000.2   4242 landmark_projection_calculator.cc:186] Using NORM_RECT without\n"
    )
    log = logging.getLogger("p2m.test.native")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        with native_stderr_filtered(is_mediapipe_routine, log, live=True):
            os.write(2, b"INFO: ")  # TFLite writes its prefix and its message apart
            os.write(2, b"Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            os.write(2, noise + b"\rdetect:  50%|#####     | 1/2")
            shown, deadline = "", time.monotonic() + 10
            while not shown and time.monotonic() < deadline:  # wait for the forwarding thread, not for a time
                shown += capfd.readouterr().err
                time.sleep(0.01)
            assert shown == "\rdetect:  50%|#####     | 1/2"  # shown while the block runs, not at its end
            os.write(2, b"\rdetect: 100%|##########| 2/2\nE0000 00:00:1.0 1 x.cc:1] a real error\n")
    err = capfd.readouterr().err
    assert err == "\rdetect: 100%|##########| 2/2\nE0000 00:00:1.0 1 x.cc:1] a real error\n"
    logged = [r.getMessage() for r in caplog.records]
    assert any("inference_feedback_manager.cc" in m for m in logged)
    assert any("landmark_projection_calculator.cc" in m for m in logged)
    assert "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." in logged
