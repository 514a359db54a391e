"""Pose2Mesh on the open body model: mesh hierarchy, PoseNet, MeshNet, losses, metrics, training and evaluation.

Modules: ``config`` (frozen dataclasses from YAML), ``graph`` (mesh hierarchy, cached), ``posenet``, ``meshnet``,
``model`` (``build_model``, ``load_model``, ``Pose2MeshOutput``), ``transforms`` (input normalisation and the
synthetic 2D errors), ``losses``, ``metrics``; training: ``data`` (batches and targets from shards), ``train``,
``checkpoint``, ``weights`` (the safetensors reader), ``evaluate``, ``distributed``, ``logging_utils``, ``plot``.
Inference is its own stage, :mod:`p2m.infer`; this package imports neither it nor :mod:`p2m.export` nor
:mod:`p2m.render`. Importing the package imports none of its modules (torch loads lazily).
"""
