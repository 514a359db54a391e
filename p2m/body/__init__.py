"""Body models as batched torch layers: anny (open, default) and SMPL (the user's own files), one interface.

```python
from p2m.body import create
body = create("anny", topology="notoes_collapse10pc").to(device)
out = body(pose, shape, trans)      # pose (B, 31, 3) axis-angle, shape (B, 6), trans (B, 3) metres
out.vertices, out.joints, out.keypoints   # (B, V, 3), (B, 17, 3) H36M, (B, 17, 3) COCO, metres
```

Importing this package is light: torch and anny load when a model is created.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2m.body.common import (
    ANNY_RIG_BONES,
    ANNY_SHAPE_NAMES,
    DEFAULT_RIG,
    DEFAULT_TOPOLOGY,
    SMPL_PARAM_SIZES,
    TOPOLOGIES,
    TOPOLOGY_ALIASES,
    BodyOutput,
    Topology,
    UnknownNameError,
    param_sizes,
    regress_joints,
    resolve_topology,
)

if TYPE_CHECKING:
    import torch

    from p2m.body.anny_model import AnnyBody
    from p2m.body.smpl import SMPLBody

logger = logging.getLogger(__name__)

#: Body models ``create`` knows.
MODELS: tuple[str, ...] = ("anny", "smpl")

__all__ = [
    "ANNY_RIG_BONES",
    "ANNY_SHAPE_NAMES",
    "DEFAULT_RIG",
    "DEFAULT_TOPOLOGY",
    "MODELS",
    "SMPL_PARAM_SIZES",
    "TOPOLOGIES",
    "TOPOLOGY_ALIASES",
    "AnnyBody",
    "BodyOutput",
    "SMPLBody",
    "Topology",
    "UnknownNameError",
    "create",
    "param_sizes",
    "regress_joints",
    "resolve_topology",
]


def create(
    model: str = "anny",
    *,
    topology: str = DEFAULT_TOPOLOGY,
    rig: str = DEFAULT_RIG,
    skinning: str = "auto",
    device: str | torch.device | None = None,
    model_path: str | Path | None = None,
    gender: str = "neutral",
    j_regressor_h36m: str | Path | None = None,
    j_regressor_coco: str | Path | None = None,
) -> AnnyBody | SMPLBody:
    """Create a body model layer.

    Args:
        model: ``"anny"`` (default) or ``"smpl"``.
        topology: anny mesh: ``"full"`` (13,718 v), ``"notoes"`` (12,272), ``"notoes_collapse10pc"`` (1,229),
            ``"notoes_collapse5pc"`` (615), ``"notoes_collapse3pc"`` (369), or an alias (``"anny"``, ``"1229"``...).
        rig: anny rig (default ``"cmu_mb"``: 31 bones with CMU BVH names).
        skinning: anny skinning, ``"auto"`` | ``"torch"`` | ``"warp"``.
        device: where to put the buffers (default: CPU).
        model_path: SMPL only: the SMPL model file (``SMPL_NEUTRAL.pkl`` ...) or its folder.
        gender: SMPL only: ``"neutral"``, ``"male"`` or ``"female"``.
        j_regressor_h36m: SMPL only: the 17x6890 H36M regressor (default: ``J_regressor_h36m_correct.npy``
            or ``J_regressor_h36m.npy`` beside the model).
        j_regressor_coco: SMPL only: the 17x6890 COCO regressor (default: ``J_regressor_coco.npy`` beside the
            model, if present).

    Returns:
        An ``nn.Module`` whose ``forward(pose, shape, trans)`` returns a :class:`BodyOutput`.

    Raises:
        UnknownNameError: (a ValueError) an unknown model, topology or skinning name.
        BodyModelError: the model cannot be built (missing package or files, unreadable cache).
    """
    name = str(model).lower()
    if name == "anny":
        from p2m.body.anny_model import AnnyBody

        body: Any = AnnyBody(rig=rig, topology=topology, skinning=skinning)
    elif name == "smpl":
        from p2m.body.smpl import SMPLBody

        body = SMPLBody(
            model_path=model_path,
            gender=gender,
            j_regressor_h36m=j_regressor_h36m,
            j_regressor_coco=j_regressor_coco,
        )
    else:
        raise UnknownNameError(f"unknown body model {model!r}; expected one of: {', '.join(MODELS)}")
    if device is not None:
        body = body.to(device)
    return body


def __getattr__(name: str) -> Any:
    if name == "AnnyBody":
        from p2m.body.anny_model import AnnyBody

        return AnnyBody
    if name == "SMPLBody":
        from p2m.body.smpl import SMPLBody

        return SMPLBody
    raise AttributeError(f"module 'p2m.body' has no attribute {name!r}")
