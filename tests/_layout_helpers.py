"""A small, valid Contract 1 dataset for the layout and validate tests (written through DatasetWriter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2m.camera import Camera, bbox_from_joints
from p2m.layout import DatasetWriter

H36M_CAMS = {  # two cameras around the origin, world z up, mm
    1: Camera.look_at([0.0, -4500.0, 1500.0], [0.0, 0.0, 900.0], f=[1145.0, 1144.0], c=[512.0, 515.0]),
    2: Camera.look_at([4000.0, 1000.0, 1200.0], [0.0, 0.0, 900.0], f=[1150.0, 1150.0], c=[500.0, 500.0]),
}
H36M_CAMS[2] = Camera(
    H36M_CAMS[2].R,
    H36M_CAMS[2].t,
    H36M_CAMS[2].f,
    H36M_CAMS[2].c,
    k=[-0.2, 0.24, -0.003],
    p=[-0.0014, -0.001],
)


def toy_pose(rng: np.random.Generator) -> np.ndarray:
    """(17, 3) world mm: a rough standing person with some noise."""
    base = np.array(
        [
            [0, 0, 900],
            [-130, 0, 900],
            [-130, 0, 480],
            [-130, 0, 60],
            [130, 0, 900],
            [130, 0, 480],
            [130, 0, 60],
            [0, 0, 1150],
            [0, 0, 1400],
            [0, -80, 1500],
            [0, 0, 1650],
            [180, 0, 1400],
            [200, 0, 1120],
            [210, 0, 860],
            [-180, 0, 1400],
            [-200, 0, 1120],
            [-210, 0, 860],
        ],
        dtype=float,
    )
    return base + rng.normal(0, 30, base.shape)


def annotation_for(cam: Camera, X: np.ndarray) -> dict:
    uv = cam.project(X)
    j2d = np.c_[uv, np.full(17, 2.0)]
    coco = np.zeros((17, 3))
    coco[:, 2] = 2
    # COCO keypoints from the H36M projection where they coincide (enough for a layout test)
    for c_idx, h_idx in {
        0: 9,
        5: 11,
        6: 14,
        7: 12,
        8: 15,
        9: 13,
        10: 16,
        11: 4,
        12: 1,
        13: 5,
        14: 2,
        15: 6,
        16: 3,
    }.items():
        coco[c_idx, :2] = uv[h_idx]
    coco[1:5] = 0  # eyes and ears unlabelled
    return {"bbox": bbox_from_joints(j2d), "keypoints": coco, "joints_2d_h36m": j2d}


def write_toy_dataset(root: Path, name: str = "toy", subjects=(1, 2), frames: int = 3, seed: int = 0) -> Path:
    """Write ``subjects`` x ``frames`` x 2 cameras, with joint_3d and body_param; return ``root``."""
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, name, info={"version": "test", "license": "CC0-1.0"}) as w:
        for s in subjects:
            for cam_idx, cam in H36M_CAMS.items():
                w.add_camera(s, cam_idx, cam)
            for f in range(frames):
                X = toy_pose(rng)
                params = {
                    "model": "anny",
                    "rig": "cmu_mb",
                    "pose": rng.normal(0, 0.2, 93).tolist(),
                    "shape": [0.5] * 6,
                    "trans": [0.0, 0.0, 0.9],
                }
                for cam_idx, cam in H36M_CAMS.items():
                    image = {
                        "file_name": f"s{s}/c{cam_idx}/{f:06d}.jpg",
                        "width": 1000,
                        "height": 1000,
                        "action_idx": 2,
                        "subaction_idx": 1,
                        "cam_idx": cam_idx,
                        "frame_idx": 5 * f,
                    }
                    w.add_frame(s, image, [annotation_for(cam, X)], joints_3d_world=X, body_param=params)
    return root
