"""SMPL through smplx, for users who have the (licence-restricted) model files, behind the same layer interface."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import torch
from torch import nn

from p2m.body.common import BodyOutput, drop_from_state_dict, regress_joints
from p2m.errors import BodyModelError

logger = logging.getLogger(__name__)

SMPL_URL = "https://smpl.is.tue.mpg.de (free registration; non-commercial licence)"
#: Environment variable naming the SMPL folder when ``model_path`` is not given.
SMPL_DIR_ENV = "P2M_SMPL_DIR"
#: Accepted model file names per gender: smplx's names first, then the original release's.
SMPL_FILE_NAMES: dict[str, tuple[str, ...]] = {
    "neutral": ("SMPL_NEUTRAL.pkl", "basicModel_neutral_lbs_10_207_0_v1.0.0.pkl"),
    "male": ("SMPL_MALE.pkl", "basicmodel_m_lbs_10_207_0_v1.0.0.pkl"),
    "female": ("SMPL_FEMALE.pkl", "basicModel_f_lbs_10_207_0_v1.0.0.pkl"),
}
H36M_REGRESSOR_NAMES = ("J_regressor_h36m_correct.npy", "J_regressor_h36m.npy")
H36M_REGRESSOR_SOURCE = (
    "J_regressor_h36m_correct.npy ships with Pose2Mesh (github.com/hongsukchoi/Pose2Mesh_RELEASE, "
    "data/Human36M/); J_regressor_h36m.npy with SPIN (github.com/nkolot/SPIN, fetch_data.sh)"
)
COCO_REGRESSOR_NAMES = ("J_regressor_coco.npy",)
SMPL_BONE_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle",
    "right_ankle", "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand",
    "right_hand",
)  # fmt: skip


def _candidate_folders(model_file: Path) -> list[Path]:
    folder = model_file.parent
    return [folder, folder.parent] if folder.name.lower() == "smpl" else [folder, folder / "smpl"]


def resolve_model_file(model_path: str | Path | None, gender: str = "neutral") -> Path:
    """The SMPL model file for ``gender`` from a file or folder path (or ``$P2M_SMPL_DIR``).

    Raises:
        BodyModelError: naming every path looked at and where to get the files.
    """
    if gender not in SMPL_FILE_NAMES:
        raise BodyModelError(f"SMPL gender {gender!r}: expected one of {', '.join(SMPL_FILE_NAMES)}")
    names = SMPL_FILE_NAMES[gender]
    if model_path is None:
        env = os.environ.get(SMPL_DIR_ENV)
        if not env:
            raise BodyModelError(
                f"the SMPL body model needs your own model file ({' or '.join(names)}): pass "
                f"model_path=<file or folder> or set {SMPL_DIR_ENV}. Get it from {SMPL_URL}."
            )
        model_path = env
    path = Path(model_path).expanduser()
    if path.is_file():
        return path
    looked = [folder / name for folder in (path, path / "smpl") for name in names]
    for candidate in looked:
        if candidate.is_file():
            return candidate
    raise BodyModelError(
        f"SMPL model file not found: looked for {', '.join(str(p) for p in looked)}. "
        f"Download the SMPL model ({names[0]}) from {SMPL_URL} and point model_path at it or its folder."
    )


def _find_beside(
    model_file: Path, explicit: str | Path | None, names: tuple[str, ...]
) -> tuple[Path | None, list[Path]]:
    if explicit is not None:
        path = Path(explicit).expanduser()
        return (path if path.is_file() else None), [path]
    looked = [folder / name for folder in _candidate_folders(model_file) for name in names]
    return next((p for p in looked if p.is_file()), None), looked


def _load_regressor(path: Path, num_vertices: int) -> torch.Tensor:
    import numpy as np

    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BodyModelError(f"{path}: cannot read the joint regressor ({exc})") from exc
    if array.shape != (17, num_vertices):
        raise BodyModelError(f"{path}: joint regressor shape {array.shape}, expected (17, {num_vertices})")
    return torch.as_tensor(np.asarray(array, dtype=np.float32))


class SMPLBody(nn.Module):
    """SMPL as a layer with anny's interface: ``body(pose, shape, trans) -> BodyOutput``.

    ``pose`` is (B, 24, 3) axis-angle (``pose[:, 0]`` the global orientation), ``shape`` (B, 10) betas, ``trans``
    (B, 3) metres (smplx's ``transl``: the root joint is not at the origin when it is 0).
    """

    model_name = "smpl"

    def __init__(
        self,
        model_path: str | Path | None = None,
        gender: str = "neutral",
        j_regressor_h36m: str | Path | None = None,
        j_regressor_coco: str | Path | None = None,
        num_betas: int = 10,
    ) -> None:
        """Load the user's SMPL files.

        Args:
            model_path: the SMPL ``.pkl`` file or its folder (default ``$P2M_SMPL_DIR``).
            gender: ``"neutral"``, ``"male"`` or ``"female"``.
            j_regressor_h36m: 17x6890 H36M regressor ``.npy`` (default: found beside the model file).
            j_regressor_coco: 17x6890 COCO regressor ``.npy`` (default: ``J_regressor_coco.npy`` beside the model
                file, else no COCO keypoints).

        Raises:
            BodyModelError: a missing package or file, named with where to get it.
        """
        super().__init__()
        model_file = resolve_model_file(model_path, gender)
        h36m_file, looked = _find_beside(model_file, j_regressor_h36m, H36M_REGRESSOR_NAMES)
        if h36m_file is None:
            raise BodyModelError(
                f"SMPL needs an H36M joint regressor: {' or '.join(H36M_REGRESSOR_NAMES)} not found "
                f"(looked at {', '.join(str(p) for p in looked)}). {H36M_REGRESSOR_SOURCE}; pass "
                "j_regressor_h36m=<file> or put it beside the model file."
            )
        coco_file, _ = _find_beside(model_file, j_regressor_coco, COCO_REGRESSOR_NAMES)
        if j_regressor_coco is not None and coco_file is None:
            raise BodyModelError(f"COCO joint regressor not found: {j_regressor_coco}")
        try:
            import smplx
        except ImportError as exc:
            raise BodyModelError(
                f"the SMPL backend needs the smplx package ({exc}): pip install 'p2m[smpl]' (or pip install smplx)"
            ) from exc
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # smplx prints a warning about 10 betas
                self.smpl = smplx.SMPL(
                    model_path=str(model_file),
                    gender=gender,
                    num_betas=num_betas,
                    create_betas=False,
                    create_global_orient=False,
                    create_body_pose=False,
                    create_transl=False,
                )
        except ModuleNotFoundError as exc:
            raise BodyModelError(
                f"{model_file}: loading needs the {exc.name!r} package (original SMPL files pickle chumpy "
                "arrays): pip install chumpy, or convert the file to plain numpy arrays"
            ) from exc
        except Exception as exc:
            raise BodyModelError(f"{model_file}: not a readable SMPL model file ({exc})") from exc
        drop_from_state_dict(self.smpl)
        num_vertices = int(self.smpl.v_template.shape[0])
        self.rig = "smpl"
        self.topology = "smpl"
        self.bone_names: list[str] = list(SMPL_BONE_NAMES)
        self.bone_parents: list[int] = [-1] + [int(p) for p in self.smpl.parents[1:].tolist()]
        self.shape_names: tuple[str, ...] = tuple(f"beta{i}" for i in range(self.smpl.num_betas))
        self.register_buffer("faces", self.smpl.faces_tensor.clone(), persistent=False)
        self.register_buffer("h36m_regressor", _load_regressor(h36m_file, num_vertices), persistent=False)
        coco = None if coco_file is None else _load_regressor(coco_file, num_vertices)
        self.register_buffer("coco_regressor", coco, persistent=False)
        if coco is None:
            logger.info(
                "no %s beside %s: SMPL outputs carry no COCO keypoints", COCO_REGRESSOR_NAMES[0], model_file
            )
        rest = self.smpl.J_regressor @ self.smpl.v_template
        self.register_buffer("rest_joints", rest - rest[:1], persistent=False)

    @property
    def num_bones(self) -> int:
        return len(self.bone_names)

    @property
    def num_shape(self) -> int:
        return len(self.shape_names)

    @property
    def num_vertices(self) -> int:
        return int(self.smpl.v_template.shape[0])

    @property
    def device(self) -> torch.device:
        return self.smpl.v_template.device

    def forward(
        self, pose: torch.Tensor, shape: torch.Tensor | None = None, trans: torch.Tensor | None = None
    ) -> BodyOutput:
        """Pose and shape SMPL.

        Args:
            pose: (B, 24, 3) or (B, 72) axis-angle, radians.
            shape: (B, 10) or (1, 10) betas; None = zeros.
            trans: (B, 3) or (1, 3) metres; None = zeros.

        Returns:
            BodyOutput: vertices (B, 6890, 3), joints (B, 17, 3) H36M, keypoints (B, 17, 3) COCO or None,
            bone_heads (B, 24, 3) SMPL joints; metres, float32.
        """
        dtype, device = self.smpl.v_template.dtype, self.device
        batch = pose.shape[0]
        pose = pose.reshape(batch, -1)
        if pose.shape[1] != 3 * self.num_bones:
            raise ValueError(
                f"pose: expected (B, {self.num_bones}, 3) or (B, {3 * self.num_bones}), got {tuple(pose.shape)}"
            )
        pose = pose.to(dtype)
        shape = (
            torch.zeros((1, self.num_shape), dtype=dtype, device=device) if shape is None else shape.to(dtype)
        )
        trans = torch.zeros((1, 3), dtype=dtype, device=device) if trans is None else trans.to(dtype)
        if shape.shape[-1] != self.num_shape or shape.shape[0] not in (1, batch):
            raise ValueError(
                f"shape: expected ({batch} or 1, {self.num_shape}) betas, got {tuple(shape.shape)}"
            )
        if trans.shape[-1] != 3 or trans.shape[0] not in (1, batch):
            raise ValueError(f"trans: expected ({batch} or 1, 3) metres, got {tuple(trans.shape)}")
        out = self.smpl(
            betas=shape.expand(batch, -1),
            body_pose=pose[:, 3:],
            global_orient=pose[:, :3],
            transl=trans.expand(batch, -1),
        )
        vertices = out.vertices
        return BodyOutput(
            vertices=vertices,
            joints=regress_joints(vertices, self.h36m_regressor),
            keypoints=None if self.coco_regressor is None else regress_joints(vertices, self.coco_regressor),
            bone_heads=out.joints[:, : self.num_bones],
        )
