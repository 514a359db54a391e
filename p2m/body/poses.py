"""Where body poses come from: the shipped CMU pose table, a folder of BVH files, or the joint-range sampler."""

from __future__ import annotations

import csv
import logging
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from p2m.body.retarget import ANNY_CMU_MB_BONES, anny_rest, retarget
from p2m.errors import ConfigError, P2MError

logger = logging.getLogger(__name__)

#: CMU's requested acknowledgement; shipped inside every pose table made from CMU data.
CMU_CREDIT = (
    "The data used in this project was obtained from mocap.cs.cmu.edu. "
    "The database was created with funding from NSF EIA-0196217."
)
#: Format tag of the pose tables written by ``scripts/make_pose_table.py``.
TABLE_FORMAT = "p2m-pose-table-v1"
#: The splits of the shipped tables.
TABLE_SPLITS = ("train", "eval")
_YAW = ("keep", "random", "zero")


class PoseDataError(P2MError):
    """A pose table or BVH folder that cannot be used; the message names the file and what was expected."""


def table_path(split: str = "train") -> Path:
    """The shipped pose table of a split (``p2m/data/cmu_poses_{split}.npz``)."""
    if split not in TABLE_SPLITS:
        raise ConfigError(f"unknown pose table split {split!r}; expected one of: {', '.join(TABLE_SPLITS)}")
    return Path(str(resources.files("p2m") / "data" / f"cmu_poses_{split}.npz"))


def read_index(folder: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of a CMU-style ``index.csv`` (``file, subject, trial, frames, fps, description, split``).

    Raises:
        PoseDataError: the file is missing or lacks the ``file`` column.
    """
    path = Path(folder) / "index.csv"
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError as exc:
        raise PoseDataError(f"{path}: file not found") from exc
    if rows and "file" not in rows[0]:
        raise PoseDataError(f"{path}: expected a header with a 'file' column, found {list(rows[0])}")
    return rows


def find_bvh_files(folder: str | os.PathLike) -> list[Path]:
    """Every ``*.bvh`` / ``*.bvh.gz`` below ``folder``, sorted by relative path."""
    root = Path(folder)
    files = [p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith((".bvh", ".bvh.gz"))]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def has_tpose_frame(values: np.ndarray) -> bool:
    """True for cgspeed's synthetic T-pose frame 0: root rotations exactly zero and the root standing where
    frame 1 stands (how every one of the 98 CMU files here starts)."""
    if values.shape[0] < 2:
        return False
    return bool(np.all(values[0, 3:6] == 0) and np.array_equal(values[0, :3], values[1, :3]))


def _clip_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    for ext in (".bvh.gz", ".bvh"):
        if rel.lower().endswith(ext):
            return rel[: -len(ext)]
    return rel


@dataclass
class PoseSource:
    """A bank of poses for anny's ``cmu_mb`` rig to draw from, or the joint-range sampler.

    Attributes:
        name: where the poses come from (for logs and dataset info).
        poses: (N, 31, 3) float32 axis-angle in anny "local-ref", or None for the sampler.
        clip: (N,) int index into ``clip_names`` per pose.
        frame: (N,) int source frame index per pose (BVH frame numbers, 0-based).
        clip_names: clip names (relative paths without extension, e.g. ``"02/02_01"``).
        clip_subject: (C,) int subject per clip (-1 when unknown).
        credit: the acknowledgement the data asks for ("" when none).
        bone_names: bone order of the poses.
    """

    name: str
    poses: np.ndarray | None = None
    clip: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    frame: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    clip_names: tuple[str, ...] = ()
    clip_subject: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    credit: str = ""
    bone_names: tuple[str, ...] = ANNY_CMU_MB_BONES
    _sampler: object | None = field(default=None, repr=False)

    # -------------------------------------------------------------------------------------------------------
    @classmethod
    def sampler(cls, scale: float = 1.0) -> PoseSource:
        """The joint-range sampler (:mod:`p2m.body.sampler`) as a source; ``scale`` shrinks every range."""
        from p2m.body.sampler import JointRangeSampler

        return cls(name="sampler", _sampler=JointRangeSampler(scale=scale))

    @classmethod
    def from_table(cls, path: str | os.PathLike | None = None, split: str = "train") -> PoseSource:
        """Load a pose table written by ``scripts/make_pose_table.py`` (default: the shipped one of ``split``).

        Raises:
            PoseDataError: the file is missing, is not a pose table, or its arrays disagree.
        """
        p = Path(path) if path is not None else table_path(split)
        try:
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except FileNotFoundError as exc:
            raise PoseDataError(f"{p}: pose table not found") from exc
        except (OSError, ValueError) as exc:
            raise PoseDataError(f"{p}: not a readable .npz pose table: {exc}") from exc
        need = ("format", "pose", "bone_names", "clip", "frame", "clip_names", "clip_subject", "credit")
        missing = [k for k in need if k not in data]
        if missing:
            raise PoseDataError(f"{p}: missing arrays {', '.join(missing)}; expected {', '.join(need)}")
        if str(data["format"]) != TABLE_FORMAT:
            raise PoseDataError(f"{p}: format {str(data['format'])!r}, expected {TABLE_FORMAT!r}")
        pose, bones = data["pose"], tuple(str(b) for b in data["bone_names"])
        if bones != ANNY_CMU_MB_BONES:
            raise PoseDataError(
                f"{p}: bone_names {bones[:4]}... differ from anny's cmu_mb bones {ANNY_CMU_MB_BONES[:4]}..."
            )
        n, nc = pose.shape[0], len(data["clip_names"])
        if pose.shape != (n, len(bones), 3) or data["clip"].shape != (n,) or data["frame"].shape != (n,):
            raise PoseDataError(
                f"{p}: pose {pose.shape}, clip {data['clip'].shape}, frame {data['frame'].shape}; expected "
                f"({n}, {len(bones)}, 3), ({n},), ({n},)"
            )
        if n and (data["clip"].min() < 0 or data["clip"].max() >= nc):
            raise PoseDataError(f"{p}: clip indices outside 0..{nc - 1}")
        poses = pose.astype(np.float32)
        if not np.isfinite(poses).all():
            raise PoseDataError(f"{p}: pose holds non-finite values")
        return cls(
            name=f"table:{p.name}",
            poses=poses,
            clip=data["clip"].astype(np.int32),
            frame=data["frame"].astype(np.int32),
            clip_names=tuple(str(c) for c in data["clip_names"]),
            clip_subject=data["clip_subject"].astype(np.int32),
            credit=str(data["credit"]),
        )

    @classmethod
    def from_bvh_files(
        cls,
        files: list[Path],
        root: str | os.PathLike | None = None,
        every: int = 4,
        drop_first: bool | None = None,
        subjects: dict[str, int] | None = None,
        name: str | None = None,
    ) -> PoseSource:
        """Retarget BVH files (CMU skeleton) onto anny and keep every ``every``-th frame.

        Args:
            files: BVH files (``.bvh`` or ``.bvh.gz``).
            root: folder the clip names are relative to (default: each file's folder).
            every: keep every N-th frame (4 turns 120 fps into 30 fps).
            drop_first: drop frame 0; None drops it when it is cgspeed's synthetic T-pose (:func:`has_tpose_frame`).
            subjects: clip name -> subject id, for provenance.
            name: the source's name.
        """
        from tqdm import tqdm

        from p2m.body.bvh import read_bvh

        if every < 1:
            raise ConfigError(f"every must be >= 1, got {every}")
        rest = anny_rest()
        poses, clips, frames, names, subj = [], [], [], [], []
        for path in tqdm(files, desc="retarget BVH", unit="clip", disable=None, file=sys.stderr):
            motion = read_bvh(path)
            drop = has_tpose_frame(motion.values) if drop_first is None else drop_first
            rt = retarget(motion, slice(1 if drop else 0, None, every), rest=rest)
            base = Path(root) if root is not None else path.parent
            clip_name = _clip_name(path, base)
            clips.append(np.full(len(rt.frames), len(names), np.int32))
            names.append(clip_name)
            subj.append((subjects or {}).get(clip_name, -1))
            poses.append(rt.pose)
            frames.append(rt.frames.astype(np.int32))
        if not names:
            raise PoseDataError(f"{name or root}: no BVH files")
        return cls(
            name=name or f"bvh:{root}",
            poses=np.concatenate(poses),
            clip=np.concatenate(clips),
            frame=np.concatenate(frames),
            clip_names=tuple(names),
            clip_subject=np.asarray(subj, dtype=np.int32),
        )

    @classmethod
    def from_bvh_dir(
        cls, path: str | os.PathLike, split: str | None = None, every: int = 4, drop_first: bool | None = None
    ) -> PoseSource:
        """Retarget every BVH file below ``path`` (a user's folder, or the CMU one).

        Args:
            path: folder with ``*.bvh`` / ``*.bvh.gz`` files (searched recursively).
            split: keep only the clips of this split of the folder's ``index.csv`` (column ``split``);
                None keeps every file.
            every: keep every N-th frame.
            drop_first: see :meth:`from_bvh_files`.

        Raises:
            PoseDataError: no BVH files, or ``split`` asked for without an ``index.csv`` with that split.
        """
        root = Path(path)
        if not root.is_dir():
            raise PoseDataError(f"{root}: not a folder of BVH files")
        subjects: dict[str, int] = {}
        if (root / "index.csv").exists():
            rows = read_index(root)
            for r in rows:
                try:
                    subjects[_clip_name(root / r["file"], root)] = int(r.get("subject") or -1)
                except ValueError:
                    pass
        if split is None:
            files = find_bvh_files(root)
        else:
            if not (root / "index.csv").exists():
                raise PoseDataError(f"{root}: split {split!r} asked for but there is no index.csv")
            rows = read_index(root)
            if rows and "split" not in rows[0]:
                raise PoseDataError(f"{root / 'index.csv'}: no 'split' column; columns: {', '.join(rows[0])}")
            files = [root / r["file"] for r in rows if r.get("split") == split]
            if not files:
                known = sorted({r.get("split", "") for r in rows})
                raise PoseDataError(
                    f"{root / 'index.csv'}: no clip in split {split!r}; splits: {', '.join(known)}"
                )
        if not files:
            raise PoseDataError(f"{root}: no .bvh or .bvh.gz files")
        label = f"bvh:{root}" + (f"[{split}]" if split else "")
        return cls.from_bvh_files(
            files, root=root, every=every, drop_first=drop_first, subjects=subjects, name=label
        )

    @classmethod
    def concat(cls, sources: list[PoseSource], name: str | None = None) -> PoseSource:
        """One bank holding the poses of several banks (clip names and subjects kept)."""
        banks = [s for s in sources if s.poses is not None]
        if not banks:
            raise PoseDataError("no pose banks to join")
        offsets = np.cumsum([0] + [len(b.clip_names) for b in banks[:-1]])
        return cls(
            name=name or "+".join(b.name for b in banks),
            poses=np.concatenate([b.poses for b in banks]),  # type: ignore[misc]
            clip=np.concatenate([b.clip + o for b, o in zip(banks, offsets)]).astype(np.int32),
            frame=np.concatenate([b.frame for b in banks]),
            clip_names=tuple(c for b in banks for c in b.clip_names),
            clip_subject=np.concatenate([b.clip_subject for b in banks]).astype(np.int32),
            credit=banks[0].credit,
        )

    @classmethod
    def from_spec(cls, spec: str | os.PathLike | None) -> PoseSource:
        """What ``--poses`` names.

        Args:
            spec: ``"cmu-train"`` (also None) / ``"cmu-eval"``: the shipped CMU table of that split; ``"cmu"``:
                both; ``"sampler"``: the joint-range sampler; or a path: a folder of BVH files (searched
                recursively), a ``.npz`` pose table or a single ``.bvh`` / ``.bvh.gz`` file.

        Raises:
            ConfigError: a spec that is none of these. PoseDataError: the files cannot be used.
        """
        key = "cmu-train" if spec is None else str(spec)
        if key in ("cmu-train", "cmu-eval"):
            return cls.from_table(split=key.split("-")[1])
        if key == "cmu":
            return cls.concat(
                [cls.from_table(split=s) for s in TABLE_SPLITS], name="table:cmu_poses_{train,eval}"
            )
        if key == "sampler":
            return cls.sampler()
        p = Path(key)
        if p.is_dir():
            return cls.from_bvh_dir(p)
        if p.name.lower().endswith(".npz"):
            return cls.from_table(p)
        if p.name.lower().endswith((".bvh", ".bvh.gz")):
            if not p.exists():
                raise PoseDataError(f"{p}: file not found")
            return cls.from_bvh_files([p], root=p.parent, name=f"bvh:{p}")
        raise ConfigError(
            f"poses {key!r}: expected cmu-train, cmu-eval, cmu, sampler, a folder of BVH files, a .npz pose table "
            "or a .bvh / .bvh.gz file"
        )

    @property
    def description(self) -> str:
        """One line for dataset info files: the source, its size and the credit it asks for."""
        if self.is_sampler:
            return "joint-range sampler (p2m.body.sampler)"
        text = f"{self.name}: {len(self)} poses from {len(self.clip_names)} clips"
        return f"{text}. {self.credit}" if self.credit else text

    # -------------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return 0 if self.poses is None else int(self.poses.shape[0])

    @property
    def is_sampler(self) -> bool:
        return self._sampler is not None

    def draw(self, n: int, rng: np.random.Generator, yaw: str = "random") -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` poses (uniformly over the bank's frames, with replacement) and their bank indices.

        Args:
            n: number of poses.
            rng: random generator (same seed, same draws).
            yaw: the body's heading about the vertical: ``"random"`` (uniform, the default: mocap headings follow
                the capture room), ``"keep"`` (as recorded) or ``"zero"`` (facing -Y, anny's front).

        Returns:
            poses (n, 31, 3) float32 axis-angle (anny "local-ref", no translation), and (n,) int64 indices into the
            bank (-1 for the sampler).
        """
        if yaw not in _YAW:
            raise ConfigError(f"yaw must be one of {', '.join(_YAW)}, got {yaw!r}")
        if self._sampler is not None:
            pose = self._sampler.sample(n, rng)  # type: ignore[attr-defined]
            idx = np.full(n, -1, dtype=np.int64)
        else:
            if not len(self):
                raise PoseDataError(f"{self.name}: no poses to draw from")
            idx = rng.integers(0, len(self), size=n)
            pose = self.poses[idx].copy()  # type: ignore[index]
        if yaw != "keep":
            pose[:, 0] = set_heading(
                pose[:, 0], rng.uniform(-np.pi, np.pi, n) if yaw == "random" else np.zeros(n)
            )
        return pose.astype(np.float32), idx

    def sample(self, n: int, rng: np.random.Generator, yaw: str = "random") -> np.ndarray:
        """``n`` poses (n, 31, 3) float32, trans-free: :meth:`draw` without the indices."""
        return self.draw(n, rng, yaw)[0]

    def describe(self, index: int) -> dict:
        """Provenance of bank pose ``index``: ``{"source", "clip", "subject", "frame"}``."""
        if index < 0 or self.poses is None:
            return {"source": self.name}
        c = int(self.clip[index])
        return {
            "source": self.name,
            "clip": self.clip_names[c],
            "subject": int(self.clip_subject[c]) if len(self.clip_subject) else -1,
            "frame": int(self.frame[index]),
        }


def heading(root_rotvec: np.ndarray) -> np.ndarray:
    """Heading (radians about +Z) of the body's forward direction: 0 when it faces -Y (anny's rest).

    Args:
        root_rotvec: (N, 3) root axis-angle (local-ref, so the root's global rotation).
    """
    from scipy.spatial.transform import Rotation

    fwd = Rotation.from_rotvec(root_rotvec).apply([0.0, -1.0, 0.0])
    return np.arctan2(fwd[:, 0], -fwd[:, 1])


def set_heading(root_rotvec: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Turn each root rotation about the vertical so that its :func:`heading` becomes ``target``.

    Args:
        root_rotvec: (N, 3) axis-angle.
        target: (N,) radians.

    Returns:
        (N, 3) axis-angle, same pitch and roll as before.
    """
    from scipy.spatial.transform import Rotation

    turn = Rotation.from_rotvec(np.outer(target - heading(root_rotvec), [0.0, 0.0, 1.0]))
    return (turn * Rotation.from_rotvec(root_rotvec)).as_rotvec()


def load_pose_source(spec: str | os.PathLike | None) -> PoseSource:
    """The :class:`PoseSource` that ``--poses SPEC`` names (see :meth:`PoseSource.from_spec`)."""
    return PoseSource.from_spec(spec)
