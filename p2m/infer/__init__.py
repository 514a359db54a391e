"""Inference, its own stage: one person's 2D pose -> a trained Pose2Mesh -> mesh files, 3D joints and pictures.

Modules: ``api`` (:func:`infer`, the entry of ``p2m infer``, and the files it writes), ``predictor`` (load a
model from a run, predict, fill in missing joints), ``pose_input`` (2D pose files and joint-set conversion),
``view`` (the fitted weak-perspective camera), ``figure`` (the picture), ``extras`` (refined hands and feet, rigged
and textured export), ``refine`` / ``refine_fit`` / ``refine_view`` (the hands-and-feet refinement and its
picture). It uses :mod:`p2m.pose2mesh`, :mod:`p2m.export`, :mod:`p2m.render` and the core modules; training never
imports it. Importing the package loads torch (``p2m infer`` imports it inside the command, so ``p2m --help``
does not).
"""

from __future__ import annotations

from p2m.infer.api import FORMATS, InferResult, infer

__all__ = ["FORMATS", "InferResult", "infer"]
