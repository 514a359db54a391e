"""Pose2Mesh on the open body model: mesh hierarchy, PoseNet, MeshNet, losses, metrics, training and inference.

Modules: ``config`` (frozen dataclasses from YAML), ``graph`` (mesh hierarchy, cached), ``posenet``, ``meshnet``,
``model`` (``build_model``, ``load_model``, ``Pose2MeshOutput``), ``transforms`` (input normalisation and the
synthetic 2D errors), ``losses``, ``metrics``; training: ``data`` (batches and targets from shards), ``train``
(``fit``), ``checkpoint``, ``evaluate``, ``distributed``, ``logging_utils``, ``plot``; inference: ``infer``
(with ``infer_input``, ``infer_view``) and ``refine`` (rigid hands and feet, with ``refine_fit``, ``refine_view``).
Importing the package imports none of them (torch loads lazily).
"""
