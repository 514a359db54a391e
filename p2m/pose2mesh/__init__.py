"""Pose2Mesh on the open body model: mesh hierarchy, PoseNet, MeshNet, losses, metrics, training and inference.

Modules: ``config`` (frozen dataclasses from YAML), ``graph`` (mesh hierarchy, cached), ``posenet``, ``meshnet``,
``model`` (``build_model``, ``load_model``, ``Pose2MeshOutput``), ``transforms`` (input normalisation and the
synthetic 2D errors), ``losses``, ``metrics``. Importing the package imports none of them (torch loads lazily).
"""
