"""The annotate stage: validate a dataset folder against Contract 1 (and, in sibling modules, detect, fit,
review and import annotations).

Only light modules are imported here; heavy ones (detectors, web UI) are imported by their own entry points.
"""

from __future__ import annotations

from p2m.annotate.validate import Problem, ValidationReport, validate

__all__ = ["Problem", "ValidationReport", "validate"]
