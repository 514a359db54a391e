"""Optional person filter: a MediaPipe Pose score per image (the ``detect`` extra)."""

from __future__ import annotations

import logging
import threading

import numpy as np

from p2m.errors import CrawlError

logger = logging.getLogger(__name__)

PERSON_FILTERS = ("none", "mediapipe")
UPPER_BODY = tuple(range(17))  # MediaPipe Pose: face, shoulders, elbows, wrists


class MediaPipePersonFilter:
    """Scores how clearly one person is visible with ``mediapipe.solutions.pose`` (static images, offline).

    The score is 0 when no pose is found, else the mean landmark visibility over the upper body
    (MediaPipe Pose landmarks 0-16), in [0, 1]. Calls are serialised: the graph is not thread-safe.

    Raises:
        CrawlError: mediapipe is not installed (``pip install 'p2m[detect]'``).
    """

    def __init__(self, model_complexity: int = 1) -> None:
        from p2m.paths import configure_third_party_caches

        configure_third_party_caches()
        try:
            import mediapipe as mp  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise CrawlError(
                "--person-filter mediapipe needs the 'detect' extra, which is not installed: "
                "pip install 'p2m[detect]' (mediapipe==0.10.21), or use --person-filter none"
            ) from exc
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=model_complexity)
        self._lock = threading.Lock()

    def score(self, rgb: np.ndarray) -> float:
        """Person score of an RGB uint8 image (H, W, 3)."""
        with self._lock:
            result = self._pose.process(np.ascontiguousarray(rgb))
        if result.pose_landmarks is None:
            return 0.0
        marks = result.pose_landmarks.landmark
        return float(np.mean([marks[i].visibility for i in UPPER_BODY]))

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._pose.close()


def load_person_filter(name: str) -> MediaPipePersonFilter | None:
    """The filter called ``name`` (``none`` gives None).

    Raises:
        CrawlError: an unknown name, or the extra it needs is missing.
    """
    if name == "none":
        return None
    if name == "mediapipe":
        return MediaPipePersonFilter()
    raise CrawlError(f"unknown person filter {name!r}; expected one of {', '.join(PERSON_FILTERS)}")
