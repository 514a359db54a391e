"""The annotate stage: validate a dataset folder against Contract 1, detect 2D people, fit the body model in 3D,
review, import COCO / Human3.6M / OpenPose / MMPose, export COCO for review tools and merge corrections back, and
synthesise fully annotated people.

One entry function per job: ``validate``, ``detect``, ``fit_bodies``, ``review``, ``import_coco``,
``import_h36m``, ``import_keypoints``, ``export_coco``, ``merge_coco``, ``synth``. Only ``validate`` is imported here; the others load their module (and torch,
MediaPipe, aiohttp) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from p2m.annotate.validate import Problem, ValidationReport, validate

_LAZY = {
    "detect": "p2m.annotate.detect",
    "export_coco": "p2m.annotate.coco_roundtrip",
    "merge_coco": "p2m.annotate.coco_roundtrip",
    "import_keypoints": "p2m.annotate.import_keypoints",
    "fit_bodies": "p2m.annotate.fit",
    "import_coco": "p2m.annotate.import_coco",
    "import_h36m": "p2m.annotate.import_h36m",
    "review": "p2m.annotate.review",
    "synth": "p2m.annotate.synth",
}

__all__ = [
    "Problem",
    "ValidationReport",
    "detect",
    "export_coco",
    "fit_bodies",
    "import_coco",
    "import_h36m",
    "import_keypoints",
    "merge_coco",
    "review",
    "synth",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'p2m.annotate' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
