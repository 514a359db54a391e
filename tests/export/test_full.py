"""The full-resolution mesh of a body-model fit: the decimated and full anny meshes agree when driven alike."""

from __future__ import annotations

import numpy as np
import pytest

from p2m.export import body_uv_layout
from p2m.export.full import BodyFit, posed_mesh

pytestmark = pytest.mark.body


def test_one_fit_drives_the_decimated_and_the_full_mesh_alike(body_1229, body_full):
    rng = np.random.default_rng(3)
    pose = rng.normal(0.0, 0.25, (body_1229.num_bones, 3))
    angle = 0.7
    rot = np.array(
        [[np.cos(angle), 0.0, np.sin(angle)], [0.0, 1.0, 0.0], [-np.sin(angle), 0.0, np.cos(angle)]]
    )
    fit = BodyFit(
        pose, np.full(body_1229.num_shape, 0.5), np.array([0.0, 0.1, 0.0]), rot, np.array([0.1, 0.2, 3.0])
    )
    small, full = posed_mesh(body_1229, fit), posed_mesh(body_full, fit)  # mm
    assert small.shape == (1229, 3) and full.shape == (13718, 3)
    joints_small = body_1229.h36m_regressor.numpy() @ small
    joints_full = body_full.h36m_regressor.numpy() @ full
    # Same pose and shape, two topologies: the H36M joints agree (measured: 7.7 mm at most); the frame applies.
    assert np.abs(joints_small - joints_full).max() < 15.0, np.abs(joints_small - joints_full).max()
    unplaced = posed_mesh(body_full, BodyFit(fit.pose, fit.shape, fit.trans, np.eye(3), np.zeros(3)))
    assert np.allclose(full, unplaced @ rot.T + fit.offset * 1000, atol=1e-3)
    assert body_uv_layout(body_full).kind == "anny" and body_uv_layout(body_1229).kind == "atlas"
