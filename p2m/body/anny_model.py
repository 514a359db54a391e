"""The anny body model as a plain float32 nn.Module layer: axis-angle pose + phenotype + translation in, mesh out."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from p2m.body.common import (
    ANNY_SHAPE_NAMES,
    DEFAULT_RIG,
    DEFAULT_TOPOLOGY,
    BodyOutput,
    UnknownNameError,
    drop_from_state_dict,
    regress_joints,
    resolve_topology,
)
from p2m.errors import BodyModelError
from p2m.native import native_stderr_filtered

logger = logging.getLogger(__name__)

BUILD_MESSAGE = "building the anny body model cache (about 1 minute, once)..."
#: Skinning choices: "auto" = warp on CPU tensors when warp imports, torch everywhere else.
SKINNING = ("auto", "torch", "warp")

_ANNY: Any = None


def import_anny():
    """Import anny with p2m's cache folders set and warp's start-up banner silenced.

    Returns:
        The ``anny`` module.

    Raises:
        BodyModelError: anny is not installed.
    """
    global _ANNY
    if _ANNY is not None:
        return _ANNY
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    try:  # warp prints a banner on init; keep warnings only
        import warp

        warp.config.log_level = warp.LOG_WARNING
    except ImportError:
        pass
    try:
        import anny
        import anny.paths
    except ImportError as exc:
        raise BodyModelError(
            f"the anny body model is not installed ({exc}); install it with: pip install anny==0.6.2"
        ) from exc
    # anny reads ANNY_CACHE_DIR when first imported; follow the environment in case it was imported earlier.
    anny.paths.set_anny_cache_path(os.environ["ANNY_CACHE_DIR"])
    _ANNY = anny
    return anny


def _native_stderr_to_log():
    """warp's initialisation prints "Warp CUDA warning: Could not find or load the NVIDIA CUDA driver" from C++ on
    every machine without a GPU; p2m runs on such machines by design, so that line goes to the debug log."""
    return native_stderr_filtered(lambda line: "CUDA driver" in line, logger)


_WARP_OK: bool | None = None


def warp_available() -> bool:
    """Whether anny's warp skinning kernel can be used (warp installed and initialised)."""
    global _WARP_OK
    if _WARP_OK is None:
        import_anny()
        try:
            with _native_stderr_to_log():
                import anny.skinning.warp_skinning  # noqa: F401  (runs warp.init())
        except Exception as exc:  # ImportError, or warp failing to initialise
            logger.debug("warp skinning unavailable: %s", exc)
            _WARP_OK = False
        else:
            _WARP_OK = True
    return _WARP_OK


def anny_cache_file(rig: str = DEFAULT_RIG, topology: str = DEFAULT_TOPOLOGY) -> Path:
    """The compact anny cache file that ``anny.Anny(rig=rig, topology=...)`` reads (or builds).

    Mirrors anny 0.6.2's cache key (a hash of the builder's arguments); only this file is needed at run time.
    """
    import_anny()
    from anny.models import build_compact_model_data
    from anny.models.model_data import (
        CURRENT_DATA_VERSION,
        RigConfig,
        TopologyConfig,
        _get_builder_metadata,
    )
    from anny.paths import get_anny_cache_path

    metadata = _get_builder_metadata(
        build_compact_model_data,
        rig=RigConfig.from_string(rig),
        topology=TopologyConfig.from_string(resolve_topology(topology).anny_name),
        local_changes="none",
        facial_actions="none",
        phenotypes="default",
        rank=None,
    )
    key = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:32]
    return (
        Path(get_anny_cache_path())
        / f"v{CURRENT_DATA_VERSION}"
        / f"build_compact_model_data_{key}.safetensors"
    )


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    """Serialise cache builds across processes (anny writes its cache files in place)."""
    import_anny()
    from anny.paths import get_anny_cache_path

    folder = Path(get_anny_cache_path())
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with open(folder / ".p2m-build.lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_anny(rig: str = DEFAULT_RIG, topology: str = DEFAULT_TOPOLOGY, skinning_method: str = "lbs"):
    """Construct the raw (float64) ``anny.Anny`` model, building its cache with a visible message if needed.

    Args:
        rig: anny rig (``"cmu_mb"``, ``"anny"``, ``"mixamo"``, ...).
        topology: p2m topology name or alias.
        skinning_method: anny's ``"lbs"`` (torch) or ``"warp_lbs"``.

    Raises:
        BodyModelError: anny rejects the rig, or the cache cannot be read.
    """
    anny = import_anny()
    topo = resolve_topology(topology)
    try:
        cache_file = anny_cache_file(rig, topo.name)
    except ValueError as exc:
        raise BodyModelError(f"anny rejects rig {rig!r}: {exc}") from exc
    with contextlib.ExitStack() as stack:
        if not cache_file.exists():
            stack.enter_context(_build_lock())
            if not cache_file.exists():  # another process may have built it while we waited
                logger.warning(
                    "%s (rig %s, topology %s, into %s)", BUILD_MESSAGE, rig, topo.name, cache_file.parent
                )
        try:
            return anny.Anny(rig=rig, topology=topo.anny_name, skinning_method=skinning_method)
        except (OSError, ValueError, RuntimeError) as exc:
            raise BodyModelError(
                f"cannot construct anny (rig {rig!r}, topology {topo.name!r}) from its cache {cache_file}: {exc}. "
                "Delete that file and run `python -m p2m.body.prepare` to rebuild it."
            ) from exc


def axis_angle_to_transforms(pose: torch.Tensor) -> torch.Tensor:
    """Per-bone rigid deltas from axis-angle rotations (Rodrigues, via roma), no translation.

    Args:
        pose: (B, J, 3) axis-angle, radians.

    Returns:
        (B, J, 4, 4) homogeneous transforms, same dtype and device.
    """
    import roma

    rot = roma.rotvec_to_rotmat(pose)
    out = torch.nn.functional.pad(rot, (0, 1, 0, 1))
    out[..., 3, 3] = 1.0
    return out


class AnnyBody(nn.Module):
    """anny as a layer: ``body(pose, shape, trans) -> BodyOutput``, float32, batched, on the buffers' device.

    Every array is a non-persistent buffer: ``.to(device)`` moves them all and ``state_dict()`` stays empty
    (the model is rebuilt from the cache, never stored in checkpoints).

    Attributes:
        model_name: ``"anny"``.
        rig: anny rig name (default ``"cmu_mb"``: 31 bones with CMU BVH names).
        topology: p2m topology name (see ``p2m.body.TOPOLOGIES``).
        bone_names: J bone names; ``bone_parents``: J parent indices (root: -1).
        num_bones, num_shape, num_vertices: J, S (= 6), V.
        shape_names: the S phenotype names, in ``shape`` column order.
        faces: (F, 3) long buffer.
        h36m_regressor, coco_regressor: (17, V) float32 buffers, rows sum to 1.
        rest_joints: (J, 3) rest bone heads at the default shape, root head at the origin (metres).
    """

    model_name = "anny"

    def __init__(
        self, rig: str = DEFAULT_RIG, topology: str = DEFAULT_TOPOLOGY, skinning: str = "auto"
    ) -> None:
        """Build the layer from the anny cache (built once, with a visible message, when missing).

        Args:
            rig: anny rig.
            topology: p2m topology name or alias (``"full"``, ``"notoes"``, ``"1229"``, ...).
            skinning: ``"auto"`` (warp on CPU when available, torch elsewhere), ``"torch"`` or ``"warp"``.
        """
        super().__init__()
        from p2m.body.regressors import build_anny_regressors, load_or_build_regressors

        if skinning not in SKINNING:
            raise UnknownNameError(f"unknown skinning {skinning!r}; expected one of: {', '.join(SKINNING)}")
        if skinning == "warp" and not warp_available():
            raise BodyModelError("skinning='warp' needs NVIDIA warp: pip install warp-lang")
        topo = resolve_topology(topology)
        self.rig = rig
        self.topology = topo.name
        self.skinning = skinning
        model = load_anny(rig, topo.name, skinning_method="lbs")

        def build() -> dict[str, torch.Tensor]:
            full = model if topo.name == "full" else load_anny(rig, "full", skinning_method="lbs")
            return build_anny_regressors(full, model)

        regressors = load_or_build_regressors(
            rig, topo.name, build, num_vertices=model.template_vertices.shape[0]
        )
        drop_from_state_dict(model)  # anny keeps its phenotype anchors as persistent buffers
        self.anny = model.to(torch.float32)
        self._active_skinning = "lbs"
        self.bone_names: list[str] = list(model.bone_labels)
        self.bone_parents: list[int] = [int(p) for p in model.bone_parents]
        self.shape_names: tuple[str, ...] = tuple(model.phenotype_labels)
        if self.shape_names != ANNY_SHAPE_NAMES:
            raise BodyModelError(f"anny phenotypes {self.shape_names}, expected {ANNY_SHAPE_NAMES}")
        self.register_buffer(
            "faces", torch.as_tensor(model.faces, dtype=torch.long).clone(), persistent=False
        )
        self.register_buffer("h36m_regressor", regressors["h36m"].to(torch.float32), persistent=False)
        self.register_buffer("coco_regressor", regressors["coco"].to(torch.float32), persistent=False)
        # both regressors in one product per forward
        self.register_buffer(
            "_regressors", torch.cat([self.h36m_regressor, self.coco_regressor]), persistent=False
        )
        with torch.no_grad():
            rest = self.rest_bone_heads()[0]
        self.register_buffer("rest_joints", rest, persistent=False)

    # ------------------------------------------------------------------------------------------------------
    @property
    def num_bones(self) -> int:
        return len(self.bone_names)

    @property
    def num_shape(self) -> int:
        return len(self.shape_names)

    @property
    def num_vertices(self) -> int:
        return int(self.anny.template_vertices.shape[0])

    @property
    def device(self) -> torch.device:
        return self.anny.template_vertices.device

    @property
    def dtype(self) -> torch.dtype:
        return self.anny.template_vertices.dtype

    def extra_repr(self) -> str:
        return f"rig={self.rig!r}, topology={self.topology!r}, V={self.num_vertices}, J={self.num_bones}"

    # ------------------------------------------------------------------------------------------------------
    def _skinning_for(self, device: torch.device) -> str:
        if self.skinning == "torch":
            return "lbs"
        if self.skinning == "warp":
            return "warp_lbs"
        # auto: warp's sparse kernel is about 2x faster than the dense torch blend on CPU for the full mesh
        # (forward and backward); on accelerators the dense torch blend (31 bones) needs no JIT step and
        # stays inside torch's streams, autograd and compile.
        return "warp_lbs" if device.type == "cpu" and warp_available() else "lbs"

    def _use_skinning(self, device: torch.device) -> None:
        method = self._skinning_for(device)
        if method != self._active_skinning:
            self.anny.set_skinning_method(method)
            self._active_skinning = method

    def _batch(
        self, pose: torch.Tensor, shape: torch.Tensor | None, trans: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        device, dtype = self.device, self.dtype
        num_bones, num_shape = self.num_bones, self.num_shape
        if pose.dim() == 2 and pose.shape[1] == num_bones * 3:
            pose = pose.reshape(pose.shape[0], num_bones, 3)
        if pose.dim() != 3 or pose.shape[1:] != (num_bones, 3):
            raise ValueError(
                f"pose: expected shape (B, {num_bones}, 3) or (B, {num_bones * 3}) axis-angle for rig "
                f"{self.rig!r}, got {tuple(pose.shape)}"
            )
        batch = pose.shape[0]
        if shape is None:
            shape = torch.full((1, num_shape), 0.5, device=device, dtype=dtype)
        if shape.dim() != 2 or shape.shape[1] != num_shape or shape.shape[0] not in (1, batch):
            raise ValueError(
                f"shape: expected ({batch} or 1, {num_shape}) phenotype values, got {tuple(shape.shape)}"
            )
        if trans is None:
            trans = torch.zeros((1, 3), device=device, dtype=dtype)
        if trans.dim() != 2 or trans.shape[1] != 3 or trans.shape[0] not in (1, batch):
            raise ValueError(f"trans: expected ({batch} or 1, 3) metres, got {tuple(trans.shape)}")
        for name, tensor in (("pose", pose), ("shape", shape), ("trans", trans)):
            if tensor.device != device:
                raise ValueError(
                    f"{name} is on {tensor.device} but the body model is on {device}; move one of them"
                )
        return pose.to(dtype), shape.to(dtype).expand(batch, -1), trans.to(dtype)

    def forward(
        self, pose: torch.Tensor, shape: torch.Tensor | None = None, trans: torch.Tensor | None = None
    ) -> BodyOutput:
        """Pose and shape the mesh.

        Args:
            pose: (B, J, 3) (or (B, J*3)) axis-angle per bone in radians, anny "local-ref" parameterisation
                (world-aligned axes at the rest pose, chained parent->child); ``pose[:, 0]`` rotates the whole
                body about the root head. Zeros = the rest A-pose.
            shape: (B, 6) or (1, 6) phenotype values in [0, 1] (``shape_names`` order); None = all 0.5.
            trans: (B, 3) or (1, 3) metres added to every vertex and joint; None = 0 (root head at the origin).

        Returns:
            BodyOutput with vertices (B, V, 3), joints (B, 17, 3) H36M, keypoints (B, 17, 3) COCO and
            bone_heads (B, J, 3), all metres, float32.
        """
        pose, shape, trans_ = self._batch(pose, shape, trans)
        device = pose.device
        self._use_skinning(device)
        autocast = (
            torch.autocast(device.type, enabled=False)
            if device.type in ("cpu", "cuda")
            else contextlib.nullcontext()
        )
        with autocast:
            out = self.anny(pose_parameters=axis_angle_to_transforms(pose), phenotype_kwargs=shape)
            vertices, bone_heads = out["vertices"], out["bone_poses"][..., :3, 3]
            if trans is not None:
                vertices = vertices + trans_[:, None, :]
                bone_heads = bone_heads + trans_[:, None, :]
            joints = regress_joints(vertices, self._regressors)
            return BodyOutput(
                vertices=vertices, joints=joints[:, :17], keypoints=joints[:, 17:], bone_heads=bone_heads
            )

    def rest_bone_heads(self, shape: torch.Tensor | None = None) -> torch.Tensor:
        """Rest-pose (A-pose) bone heads for given phenotypes, root head at the origin.

        Args:
            shape: (B, 6) phenotype values, or None for the default shape (B = 1).

        Returns:
            (B, J, 3) metres, ``bone_names`` order: what ``forward`` gives for a zero pose.
        """
        if shape is None:
            shape = torch.full((1, self.num_shape), 0.5, device=self.device, dtype=self.dtype)
        pose = torch.zeros((1, self.num_bones, 3), device=self.device, dtype=self.dtype)
        pose, shape, _ = self._batch(pose.expand(shape.shape[0], -1, -1), shape, None)
        rest = self.anny.get_rest_model(
            self.anny._get_phenotype_blendshape_coefficients(
                shape,
                shape.new_zeros((shape.shape[0], len(self.anny.local_change_labels))),
                shape.new_zeros((shape.shape[0], len(self.anny.facial_action_labels))),
            )
        )["rest_bone_heads"]
        return rest - rest[:, :1]
