"""The small Human3.6M-like dataset the shard and training security tests write shards from."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from p2m.camera import Camera, bbox_from_joints
from p2m.layout import DatasetWriter


def toy_dataset(root: Path, *, subjects: tuple[int, ...] = (1,), frames: int = 8, seed: int = 0) -> Path:
    """``frames`` random poses per subject seen by one camera, with 3D joints (no images, no body model)."""
    cam = Camera.look_at([0.0, -4500.0, 1500.0], [0.0, 0.0, 900.0], f=[1145.0, 1144.0], c=[512.0, 515.0])
    rng = np.random.default_rng(seed)
    with DatasetWriter(root, "h36m", info={"version": "test"}) as w:
        for s in subjects:
            w.add_camera(s, 1, cam)
            for f in range(frames):
                X = rng.normal(0, 300, (17, 3)) + [0.0, 0.0, 900.0]
                j2d = np.c_[cam.project(X), np.full(17, 2.0)]
                ann = {"bbox": bbox_from_joints(j2d), "keypoints": j2d.copy(), "joints_2d_h36m": j2d}
                image = {
                    "file_name": f"S{s}/{f}.jpg",
                    "width": 1000,
                    "height": 1000,
                    "action_idx": 2,
                    "subaction_idx": 1,
                    "cam_idx": 1,
                    "frame_idx": f,
                }
                w.add_frame(s, image, [ann], joints_3d_world=X)
    return root
