"""The body-model fitter behind `p2m annotate fit`: pose, shape and placement of anny from 2D keypoints, batched.

Each person is seen in one or more views (a camera and 17 COCO keypoints or 17 H36M joints with weights). The
fit runs in the frame of the person's first camera (the reference view) and in two stages:

1. **Placement** (rigid, cheap): the rest body's torso points (shoulders, hips; the face with a low weight) are
   placed by a rotation and a translation, from an upright body turned to ``headings`` directions about its
   vertical axis. Translation starts from similar triangles: a ``person_height_m`` tall person whose image is as
   tall as the bbox (or the 2D points' box) stands at ``Z = f * H / h``. From the best heading, and from the
   best one facing the other way (front / back), each of ``candidates`` representative poses of the prior's pose
   source (k-means medoids of their joints) is placed again using all points. The ``starts`` best placements
   (the best one, the best facing the other way, then the next best) go on to stage 2.
2. **Pose and shape**: every parameter (root rotation, translation, the free pose dimensions of
   :class:`p2m.body.prior.PosePrior`, the 6 phenotype values, clamped to [0, 1]) by Adam, in three phases
   whose prior weights decrease (``prior_weights``), from the start's candidate pose. Of the starts of a person the
   one with the lowest energy wins.

Translation is parameterised as ``(a Z, b Z, Z)`` with ``Z = exp(log_z)``: ``a, b`` are normalised image
coordinates of the root, so steps in image position and depth are of the same size. The data term is the robust
(Geman-McClure, scale ``ROBUST_SIGMA``) squared reprojection error in pixels rescaled so that the box of the
person's 2D points has a ``NORM_PX``-pixel diagonal,
weighted by the keypoint weights, so priors weigh the same for large and small people.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from p2m.body.prior import SHAPE_MEAN, PosePrior, ShapePrior, load_pose_stats
from p2m.camera import Camera

logger = logging.getLogger(__name__)

#: Residuals are measured in pixels of a person this many pixels tall.
NORM_PX = 1000.0
#: Scale (normalised px) of the Geman-McClure robust function.
ROBUST_SIGMA = 100.0
#: Torso points place the rest body first; then all points place the candidate poses. Face points weigh
#: ``FACE_WEIGHT`` in both (the head turns on the neck).
COCO_TORSO, COCO_FACE = (5, 6, 11, 12), (0, 1, 2, 3, 4)
H36M_TORSO, H36M_FACE = (0, 1, 4, 7, 8, 11, 14), (9, 10)
FACE_WEIGHT = 0.3
KINDS = ("coco", "h36m")
#: anny (+X left, -Y forward, +Z up) -> camera (x right, y down, z forward) for an upright person facing the camera.
ANNY_TO_CAMERA_FACING = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass
class View:
    """One camera's view of a person.

    Attributes:
        camera: the image's camera (world mm -> px).
        points: (17, 2) target pixels (COCO-17 or H36M-17 order, see ``kind``).
        weights: (17,) non-negative weights (0 = not seen).
        kind: ``"coco"`` (compared with the body's COCO keypoints) or ``"h36m"`` (its H36M joints).
        height_px: the person's image height (bbox height) for the initial depth, or None to use the points.
    """

    camera: Camera
    points: np.ndarray
    weights: np.ndarray
    kind: str = "coco"
    height_px: float | None = None


@dataclass
class FitResult:
    """A fitted person, in the world frame of the cameras (Contract 1).

    Attributes:
        pose: (J, 3) axis-angle, ``pose[0]`` the root's world rotation.
        shape: (S,) phenotype values in [0, 1].
        trans: (3,) metres, world frame.
        joints_mm: (17, 3) H36M joints, world mm (float64).
        keypoints_mm: (17, 3) COCO keypoints, world mm (float64).
        energy: the final objective (data + priors) of the kept start.
    """

    pose: np.ndarray
    shape: np.ndarray
    trans: np.ndarray
    joints_mm: np.ndarray
    keypoints_mm: np.ndarray
    energy: float


@dataclass(frozen=True)
class SolverOptions:
    """Settings of :class:`BodyFitter` (see the module docstring)."""

    iters: int = 100
    rigid_iters: int = 60
    headings: int = 8
    candidates: int = 32
    starts: int = 2
    person_height_m: float = 1.7
    prior_weights: tuple[float, float, float] = (100.0, 20.0, 5.0)
    shape_weight: float = 20.0
    lr: float = 0.03
    prior_source: str = "auto"


def kmeans_medoids(x: np.ndarray, k: int, iters: int = 20, seed: int = 0) -> np.ndarray:
    """Indices of ``k`` rows of ``x`` (N, D) that represent it: k-means++ seeding, Lloyd steps, nearest row to
    each centre (distinct). Deterministic for a given seed."""
    n = x.shape[0]
    if k >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(n)]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        centres.append(x[rng.choice(n, p=d2 / d2.sum()) if d2.sum() > 0 else rng.integers(n)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.array(centres)
    for _ in range(iters):
        label = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (label == j).any():
                c[j] = x[label == j].mean(0)
    dist = ((x[:, None] - c[None]) ** 2).sum(-1)  # (N, k)
    out: list[int] = []
    for j in np.argsort(dist.min(0)):
        for i in np.argsort(dist[:, j]):
            if i not in out:
                out.append(int(i))
                break
    return np.array(sorted(out))


def _rotz(angles: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(angles), torch.sin(angles)
    z, o = torch.zeros_like(c), torch.ones_like(c)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*angles.shape, 3, 3)


def _rodrigues(rv: torch.Tensor) -> torch.Tensor:
    import roma

    return roma.rotvec_to_rotmat(rv)


class _Views:
    """The views of a batch of people as tensors: ``person`` index, transform from the reference camera, intrinsics."""

    def __init__(self, people: Sequence[Sequence[View]], device: torch.device) -> None:
        rows = []
        for p, views in enumerate(people):
            ref = views[0].camera
            for v in views:
                rel_r = v.camera.R @ ref.R.T  # X_v = rel_r X_ref + rel_t (mm)
                rel_t = v.camera.t - rel_r @ ref.t
                pts = np.asarray(v.points, dtype=np.float64).reshape(17, 2)
                w = np.asarray(v.weights, dtype=np.float64).reshape(17)
                seen = w > 0
                ext = np.ptp(pts[seen], axis=0) if seen.sum() >= 2 else np.zeros(2)
                height = float(v.height_px) if v.height_px else float(max(ext[1], 0.6 * ext[0]) * 1.15)
                size = max(float(np.hypot(*ext)), 1.0)
                k = v.camera.k if v.camera.k is not None else np.zeros(3)
                pp = v.camera.p if v.camera.p is not None else np.zeros(2)
                rows.append(
                    (
                        p,
                        rel_r,
                        rel_t / 1000.0,
                        v.camera.f,
                        v.camera.c,
                        k,
                        pp,
                        pts,
                        w,
                        KINDS.index(v.kind),
                        max(height, 1.0),
                        size,
                    )
                )

        def t(i, dtype=torch.float32):
            return torch.as_tensor(np.array([r[i] for r in rows]), dtype=dtype, device=device)

        self.person = t(0, torch.long)
        self.R, self.t, self.f, self.c, self.k, self.p = t(1), t(2), t(3), t(4), t(5), t(6)
        self.points, self.weights, self.kind = t(7), t(8), t(9, torch.long)
        self.height_px = t(10)
        self.scale = NORM_PX / t(11)  # normalised px per image px
        self.is_ref = torch.as_tensor(
            [i == 0 or rows[i][0] != rows[i - 1][0] for i in range(len(rows))], device=device
        )

    def project(self, pts_ref: torch.Tensor) -> torch.Tensor:
        """(N, 17, 3) points (metres, reference camera frame of each view's person) -> (N, 17, 2) px."""
        x = pts_ref @ self.R.transpose(1, 2) + self.t[:, None]
        xy = x[..., :2] / x[..., 2:3].clamp(min=1e-3)
        r2 = (xy**2).sum(-1)
        k, p = self.k[:, None], self.p[:, None]
        radial = 1 + k[..., 0] * r2 + k[..., 1] * r2**2 + k[..., 2] * r2**3
        tan = p[..., 0] * xy[..., 1] + p[..., 1] * xy[..., 0]
        xd = xy[..., 0] * (radial + tan) + p[..., 1] * r2
        yd = xy[..., 1] * (radial + tan) + p[..., 0] * r2
        return torch.stack([xd, yd], -1) * self.f[:, None] + self.c[:, None]

    def data_energy(self, pts_ref: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) robust weighted squared error (normalised px) of each view."""
        res = (self.project(pts_ref) - self.points) * self.scale[:, None, None]
        sq = (res**2).sum(-1)
        rho = ROBUST_SIGMA**2 * sq / (sq + ROBUST_SIGMA**2)
        w = self.weights if weights is None else weights
        return (w * rho).sum(-1)

    def per_person(self, values: torch.Tensor, num_people: int) -> torch.Tensor:
        """Sum (N,) view values into (P,) person values."""
        return torch.zeros(num_people, device=values.device, dtype=values.dtype).index_add_(
            0, self.person, values
        )


class BodyFitter:
    """Fit anny to people's 2D keypoints (see the module docstring).

    Args:
        device: torch device for the body model and the optimisation.
        topology: the output topology (body_param's ``topology``; its regressors give the written joints).
        fit_topology: the (coarser, faster) topology the optimisation runs on; same rig and parameters.
        options: :class:`SolverOptions`.
    """

    def __init__(
        self,
        device: torch.device | str,
        topology: str = "full",
        fit_topology: str = "notoes_collapse10pc",
        options: SolverOptions | None = None,
    ) -> None:
        from p2m.body import create, resolve_topology

        self.device = torch.device(device)
        self.options = options or SolverOptions()
        self.body = create("anny", topology=fit_topology).to(self.device)
        if resolve_topology(topology).name == self.body.topology:
            self.out_body = self.body
        else:
            self.out_body = create("anny", topology=topology).to(self.device)
        self.prior = PosePrior(load_pose_stats(self.options.prior_source), self.body.bone_names).to(
            self.device
        )
        self.shape_prior = ShapePrior().to(self.device)
        self._candidate_pose, self._candidates = self._make_candidates(self.options.candidates)
        wts = torch.ones(2, 17, device=self.device)
        torso = torch.zeros(2, 17, device=self.device)
        for kind, (face, trunk) in enumerate(((COCO_FACE, COCO_TORSO), (H36M_FACE, H36M_TORSO))):
            wts[kind, list(face)] = FACE_WEIGHT
            torso[kind, list(trunk)] = 1.0
            torso[kind, list(face)] = FACE_WEIGHT
        self._rigid_weights, self._torso_weights = wts, torso

    def _make_candidates(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial guesses: the rest pose plus ``count`` representative poses of the prior's source.

        Returns:
            body poses (C, J-1, 3) and their (C, 2, 17, 3) COCO keypoints and H36M joints (body frame, mean shape).
        """
        samples = self.prior.samples
        poses = [np.zeros((1, *samples.shape[1:]))]
        shape = torch.tensor([SHAPE_MEAN], device=self.device)
        if count > 0 and len(samples):
            joints = []
            with torch.no_grad():
                for chunk in np.array_split(samples, max(1, len(samples) // 500)):
                    out = self.body(torch.as_tensor(chunk, dtype=torch.float32, device=self.device), shape)
                    joints.append(out.joints.reshape(len(chunk), -1).cpu().numpy())
            poses.append(samples[kmeans_medoids(np.concatenate(joints), count)])
        pose = torch.as_tensor(np.concatenate(poses), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            out = self.body(pose, shape)
        return pose[:, 1:], torch.stack([out.keypoints, out.joints], 1)

    @property
    def topology(self) -> str:
        return self.out_body.topology

    # ------------------------------------------------------------------------------------------------------
    def fit(self, people: Sequence[Sequence[View]], init_pose: np.ndarray | None = None) -> list[FitResult]:
        """Fit a batch of people.

        Args:
            people: ``people[i]`` lists the views of person i (the first is the reference camera).
            init_pose: optional (P, J, 3) body poses to start the pose stage from (the root is ignored);
                default: the candidate poses the placement stage picked.

        Returns:
            One :class:`FitResult` per person.
        """
        if not people:
            return []
        for i, views in enumerate(people):
            if not views:
                raise ValueError(f"person {i} has no views")
            for v in views:
                if v.kind not in KINDS:
                    raise ValueError(f"view kind {v.kind!r}; expected one of {KINDS}")
        num = len(people)
        t0 = time.perf_counter()
        rot, trans, cand = self._place(people)  # (S*P, 3, 3), (S*P, 3), (S*P,) per start, start-major
        starts = rot.shape[0] // num
        views = _Views([people[i % num] for i in range(starts * num)], self.device)
        init = self._candidate_pose[cand][:, self.prior.free]
        if init_pose is not None:
            given = torch.as_tensor(np.asarray(init_pose)[:, 1:], dtype=torch.float32, device=self.device)
            init = given[:, self.prior.free].repeat(starts, 1)
        t1 = time.perf_counter()
        result = self._refine(views, rot, trans, init)
        logger.debug("fit %d people: placement %.2f s, pose %.2f s", num, t1 - t0, time.perf_counter() - t1)
        energy = result["energy"].reshape(starts, num)
        best = energy.argmin(0)
        pick = best * num + torch.arange(num, device=self.device)
        return self._results(people, {k: v[pick] for k, v in result.items()})

    # ------------------------------------------------------------------------------------------------------
    def _initial_translation(
        self, views: _Views, rot: torch.Tensor, pts3d: torch.Tensor, w: torch.Tensor
    ) -> torch.Tensor:
        """(a, b, log Z) per person (rotations ``rot`` (P, 3, 3)) from its reference view: similar triangles for Z,
        the weighted centroid of the points for a, b."""
        ref = views.is_ref.nonzero()[:, 0]
        f = views.f[ref].mean(-1)
        z = f * self.options.person_height_m / views.height_px[ref]
        wr = w[ref]
        centre2d = (views.points[ref] * wr[..., None]).sum(1) / wr.sum(1, keepdim=True).clamp(min=1e-6)
        centre3d = (pts3d[ref] * wr[..., None]).sum(1) / wr.sum(1, keepdim=True).clamp(min=1e-6)
        ab = (centre2d - views.c[ref]) / views.f[ref]
        offset = torch.einsum("pij,pj->pi", rot, centre3d)  # the rotated centroid, to subtract
        a = ab[:, 0] - offset[:, 0] / z
        b = ab[:, 1] - offset[:, 1] / z
        return torch.stack([a, b, torch.log(z)], -1)

    @staticmethod
    def _translation(abz: torch.Tensor) -> torch.Tensor:
        z = torch.exp(abz[:, 2])
        return torch.stack([abz[:, 0] * z, abz[:, 1] * z, z], -1)

    def _place(self, people: Sequence[Sequence[View]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stage 1: rigid placement, first of the rest body's torso at every heading, then of every candidate pose
        from the best heading and from the best one facing the other way; the best ``starts`` per person.

        Returns:
            rotations (S*P, 3, 3), translations (a, b, log Z) (S*P, 3) and candidate indices (S*P,), start-major.
        """
        opts = self.options
        num, k, c = len(people), max(1, opts.headings), self._candidates.shape[0]
        cols = torch.arange(num, device=self.device)
        # 1a: the rest body's torso (and face) at k headings about its vertical axis
        views = _Views([people[i % num] for i in range(k * num)], self.device)
        heading = torch.arange(k, device=self.device).repeat_interleave(num) * (2 * math.pi / k)
        facing = torch.as_tensor(ANNY_TO_CAMERA_FACING, dtype=torch.float32, device=self.device)
        rot0 = facing @ _rotz(heading)  # (k*P, 3, 3)
        pts3d = self._candidates[0, views.kind]
        w = views.weights * self._torso_weights[views.kind]
        abz = self._initial_translation(views, rot0, pts3d, w)
        rot, abz, energy = self._rigid(views, rot0, abz, pts3d, w, opts.rigid_iters)
        energy, rot, abz = energy.reshape(k, num), rot.reshape(k, num, 3, 3), abz.reshape(k, num, 3)
        best = energy.argmin(0)
        heads = [best]
        if k >= 4:  # and the best heading facing the other way
            gap = (torch.arange(k, device=self.device)[:, None] - best[None]).remainder(k)
            gap = torch.minimum(gap, k - gap)
            heads.append(torch.where(gap * 4 > k, energy, torch.full_like(energy, math.inf)).argmin(0))
        nh = len(heads)
        rot_h = torch.cat([rot[h, cols] for h in heads])  # (nh*P, 3, 3), heading-major
        abz_h = torch.cat([abz[h, cols] for h in heads])
        # 1b: every candidate pose from those placements, all points
        rows = nh * num
        views = _Views([people[i % num] for i in range(c * rows)], self.device)
        cand = torch.arange(c, device=self.device).repeat_interleave(rows)
        pts3d = self._candidates[cand[views.person], views.kind]
        w = views.weights * self._rigid_weights[views.kind]
        rot, abz, energy = self._rigid(
            views, rot_h.repeat(c, 1, 1), abz_h.repeat(c, 1), pts3d, w, max(opts.rigid_iters // 3, 1)
        )
        energy = energy.reshape(c * nh, num)  # row = candidate * nh + heading
        rot, abz = rot.reshape(c * nh, num, 3, 3), abz.reshape(c * nh, num, 3)
        order = energy.argsort(0)  # (c*nh, P)
        picks = [order[0]]
        if nh > 1 and opts.starts > 1:  # the best of the other facing
            other = (torch.arange(c * nh, device=self.device) % nh)[:, None] != (order[0] % nh)[None]
            picks.append(torch.where(other, energy, torch.full_like(energy, math.inf)).argmin(0))
        for r in range(1, c * nh):  # then the next best hypotheses
            if len(picks) >= opts.starts:
                break
            if all(bool((order[r] != p).all()) for p in picks):
                picks.append(order[r])
        while len(picks) < opts.starts:
            picks.append(order[len(picks)])
        rot = torch.cat([rot[p, cols] for p in picks])
        abz = torch.cat([abz[p, cols] for p in picks])
        cand = torch.cat([p // nh for p in picks])
        return rot, abz, cand

    def _rigid(
        self,
        views: _Views,
        rot0: torch.Tensor,
        abz0: torch.Tensor,
        pts3d: torch.Tensor,
        w: torch.Tensor,
        iters: int,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Adam on a rotation delta and (a, b, log Z) of each hypothesis; returns rotations, abz and energies."""
        num = rot0.shape[0]
        delta = torch.zeros(num, 3, device=self.device, requires_grad=True)
        abz = abz0.clone().requires_grad_(True)
        optim = torch.optim.Adam([{"params": [delta], "lr": 0.05}, {"params": [abz], "lr": 0.02}])
        for _ in range(iters):
            optim.zero_grad()
            self._rigid_energy(views, delta, rot0, abz, pts3d, w, num).sum().backward()
            optim.step()
        with torch.no_grad():
            energy = self._rigid_energy(views, delta, rot0, abz, pts3d, w, num)
            return _rodrigues(delta) @ rot0, abz.detach(), energy

    def _rigid_energy(self, views: _Views, delta, rot0, abz, pts3d, w, num) -> torch.Tensor:
        rot = _rodrigues(delta) @ rot0
        pts = (
            torch.einsum("nij,nkj->nki", rot[views.person], pts3d)
            + self._translation(abz)[views.person][:, None]
        )
        return views.per_person(views.data_energy(pts, w), num)

    # ------------------------------------------------------------------------------------------------------
    def _refine(
        self, views: _Views, rot0: torch.Tensor, abz0: torch.Tensor, init: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Stage 2: everything by Adam with decreasing prior weights."""
        opts = self.options
        num = rot0.shape[0]
        delta = torch.zeros(num, 3, device=self.device, requires_grad=True)
        abz = abz0.clone().requires_grad_(True)
        if init is None:
            init = torch.zeros(num, self.prior.num_free, device=self.device)
        free = init.clone().requires_grad_(True)
        shape = torch.tensor([SHAPE_MEAN], device=self.device).repeat(num, 1).requires_grad_(True)
        optim = torch.optim.Adam(
            [
                {"params": [delta], "lr": opts.lr},
                {"params": [abz], "lr": opts.lr * 0.5},
                {"params": [free], "lr": opts.lr},
                {"params": [shape], "lr": opts.lr * 0.5},
            ]
        )
        iters = max(opts.iters, 3)
        phases = len(opts.prior_weights)
        base = [g["lr"] for g in optim.param_groups]
        for it in range(iters):
            phase = min(it * phases // iters, phases - 1)
            if phase == phases - 1:  # cosine decay over the last phase
                start = (phases - 1) * iters // phases
                frac = (it - start) / max(iters - start, 1)
                for g, lr in zip(optim.param_groups, base):
                    g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            optim.zero_grad()
            energy = self._energy(views, delta, rot0, abz, free, shape, opts.prior_weights[phase])["energy"]
            energy.sum().backward()
            optim.step()
            with torch.no_grad():
                shape.clamp_(0.0, 1.0)
        with torch.no_grad():
            out = self._energy(views, delta, rot0, abz, free, shape, opts.prior_weights[-1])
            out["rot"] = _rodrigues(delta) @ rot0
            out["trans"] = self._translation(abz)
            out["body_pose"] = self.prior.compose(free)
            out["shape"] = shape.detach().clone()
        return out

    def _energy(
        self, views: _Views, delta, rot0, abz, free, shape, prior_weight: float
    ) -> dict[str, torch.Tensor]:
        num = rot0.shape[0]
        body_pose = self.prior.compose(free)
        pose = torch.cat([torch.zeros_like(body_pose[:, :1]), body_pose], 1)
        out = self.body(pose, shape)
        rot = _rodrigues(delta) @ rot0
        trans = self._translation(abz)
        pts = torch.stack([out.keypoints, out.joints], 1)  # (P, 2, 17, 3)
        pts = pts[views.person, views.kind]  # (N, 17, 3)
        pts = torch.einsum("nij,nkj->nki", rot[views.person], pts) + trans[views.person][:, None]
        data = views.per_person(views.data_energy(pts), num)
        prior = prior_weight * self.prior(body_pose) + self.options.shape_weight * self.shape_prior(shape)
        return {"energy": data + prior, "data": data}

    # ------------------------------------------------------------------------------------------------------
    def _results(self, people: Sequence[Sequence[View]], best: dict[str, torch.Tensor]) -> list[FitResult]:
        """World-frame parameters and the output topology's joints of the kept starts."""
        from scipy.spatial.transform import Rotation

        rot_cam = best["rot"].double().cpu().numpy()
        trans_cam = best["trans"].double().cpu().numpy()
        results = []
        roots, transes = [], []
        for i, views in enumerate(people):
            ref = views[0].camera
            root = ref.R.T @ rot_cam[i]  # body -> world rotation
            roots.append(Rotation.from_matrix(root).as_rotvec())
            transes.append(ref.R.T @ (trans_cam[i] - ref.t / 1000.0))
        body_pose = best["body_pose"]
        pose = torch.cat(
            [torch.as_tensor(np.array(roots), dtype=torch.float32, device=self.device)[:, None], body_pose], 1
        )
        trans = torch.as_tensor(np.array(transes), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            out = self.out_body(pose, best["shape"])
        # Joints in float64 from the float32 root-relative ones: translation added in float64 (mm precision).
        joints = out.joints.double().cpu().numpy() + np.array(transes)[:, None]
        kps = out.keypoints.double().cpu().numpy() + np.array(transes)[:, None]
        pose_np = pose.double().cpu().numpy()
        for i in range(len(people)):
            results.append(
                FitResult(
                    pose=pose_np[i],
                    shape=best["shape"][i].double().cpu().numpy(),
                    trans=np.array(transes[i]),
                    joints_mm=joints[i] * 1000.0,
                    keypoints_mm=kps[i] * 1000.0,
                    energy=float(best["energy"][i]),
                )
            )
        del trans
        return results
