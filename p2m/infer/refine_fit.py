"""The body-model fit behind ``refine_extremities(method="fit")``: pose, shape and a rigid transform from a mesh.

Steps (all batched): a weighted Kabsch alignment of the rest-pose torso brings the mesh into the body model's
frame; each bone's rotation is read off its own vertices (Kabsch again, a bone carrying the descendants whose pose
the prior holds fixed) and chained into anny's "local-ref" parameters (``L = G_parent^T G``); a few Gauss-Newton
steps set shape and translation for that pose; then Adam refines everything on the weighted vertex L2 distance
(mm^2) plus the Gaussian pose prior over the shipped CMU training poses and the shape prior of
:mod:`p2m.body.prior`.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import numpy as np
import roma
import torch

from p2m.body.prior import SHAPE_MEAN, SHAPE_STD, PoseStats, ShapePrior, load_pose_stats
from p2m.body.retarget import ANNY_CMU_MB_BONES
from p2m.errors import P2MError
from p2m.export.full import BodyFit

logger = logging.getLogger(__name__)

__all__ = ["MeshFitter", "kabsch"]

#: Bones of the (nearly rigid) torso used for the initial rigid alignment (anny cmu_mb, anny, SMPL names).
TORSO_BONES = ("Hips", "LowerBack", "Spine", "LHipJoint", "RHipJoint", "root", "spine05", "spine04", "spine03",
               "pelvis", "spine1", "spine2")  # fmt: skip
#: Adam steps and learning rate (rad / phenotype units; the translation's is a tenth, in m); prior weights.
FIT_STEPS = 100
FIT_LR = 0.02
POSE_PRIOR_WEIGHT = 1.0
SHAPE_PRIOR_WEIGHT = 1.0
#: Gauss-Newton steps of the initial shape estimate, and their finite-difference step (phenotype units).
GN_STEPS = 3
GN_EPS = 0.05
#: Pose prior (rad) when the rig has no CMU pose table: an isotropic Gaussian around the rest pose.
FALLBACK_POSE_STD = 0.6


def kabsch(
    src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least-squares rigid transform (rotation, no reflection) with ``dst ~ src @ R^T + t``.

    Args:
        src: (B, N, 3) or (N, 3) points.
        dst: (B, N, 3) points.
        weights: (N,) or (B, N) non-negative weights (None: uniform).

    Returns:
        ``(R (B, 3, 3), t (B, 3))``, dtype of ``dst``.
    """
    dst64 = dst.double()
    src64 = src.double().expand_as(dst64)
    w = (
        torch.ones(dst64.shape[:-1], dtype=torch.float64, device=dst.device)
        if weights is None
        else weights.double()
    )
    w = (w / w.sum(dim=-1, keepdim=True).clamp_min(1e-12)).expand(dst64.shape[:-1])
    mu_s = (w[..., None] * src64).sum(-2)
    mu_d = (w[..., None] * dst64).sum(-2)
    cov = torch.einsum("bn,bni,bnj->bij", w, dst64 - mu_d[:, None], src64 - mu_s[:, None])
    u, _, vh = torch.linalg.svd(cov)
    fix = torch.ones(dst64.shape[0], 3, dtype=torch.float64, device=dst.device)
    fix[:, 2] = torch.sign(torch.linalg.det(u @ vh)).clamp_min(0.0) * 2 - 1
    rot = u @ (fix[:, :, None] * vh)
    trans = mu_d - torch.einsum("bij,bj->bi", rot, mu_s)
    return rot.to(dst.dtype), trans.to(dst.dtype)


@functools.lru_cache(maxsize=1)
def _cmu_pose_prior() -> PoseStats | None:
    """The pose Gaussian of the shipped CMU training table (:func:`p2m.body.prior.load_pose_stats`), or None
    (warned once) when the table cannot be read. Dimensions that do not move in the table (finger and hip-joint
    bones) are not free: the fit holds them at the mean."""
    try:
        return load_pose_stats("cmu-train")
    except P2MError as exc:
        logger.warning("refine: no pose prior from the CMU train table (%s); using a rest-pose Gaussian", exc)
        return None


class MeshFitter:
    """Fits a body model to meshes of its topology (module docstring); ``fitter(target) -> (fitted, rms)``.

    Args:
        body: the body model layer.
        skin: (V, J) its skinning weights (:func:`p2m.export.skin.body_skinning_weights`).
        data_weight: (V,) weight of each vertex in the data term.
        digit_bones: bones held at the pose prior's mean (fingers, toes), on top of those the prior fixes.
        steps, lr, pose_prior_weight, shape_prior_weight: Adam steps, learning rate and the priors' weights.
    """

    def __init__(
        self,
        body: Any,
        skin: np.ndarray,
        data_weight: np.ndarray,
        digit_bones: tuple[int, ...] = (),
        *,
        steps: int = FIT_STEPS,
        lr: float = FIT_LR,
        pose_prior_weight: float = POSE_PRIOR_WEIGHT,
        shape_prior_weight: float = SHAPE_PRIOR_WEIGHT,
    ) -> None:
        self.body, self.skin = body, skin
        self.steps, self.lr = int(steps), float(lr)
        self.pose_prior_weight, self.shape_prior_weight = float(pose_prior_weight), float(shape_prior_weight)
        self.digit_bones = tuple(digit_bones)
        dev = body.device
        self.data_weight = torch.as_tensor(data_weight / data_weight.sum(), dtype=torch.float32, device=dev)
        with torch.no_grad():
            self.template = body(torch.zeros(1, body.num_bones, 3, device=dev)).vertices[0]  # (V, 3) m
        names = list(body.bone_names)
        torso = [names.index(b) for b in TORSO_BONES if b in names]
        tw = skin[:, torso].sum(axis=1) if torso else np.ones(len(skin))
        self.torso_weight = torch.as_tensor(tw * (tw > 0.5), dtype=torch.float32, device=dev)
        self.prior = _cmu_pose_prior() if tuple(names) == tuple(ANNY_CMU_MB_BONES) else None
        self.shape_prior = ShapePrior().to(dev)
        self.last_fits: list[BodyFit] = []  # the parameters of the last call's fits, one per mesh

    def _prior_tensors(self, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean (J-1, 3), free (J-1, 3) bool, chol_t (D, D)) of the pose prior over the non-root bones."""
        nb = self.body.num_bones
        if self.prior is None:
            mean, free, chol_t = (
                np.zeros((nb - 1, 3)),
                np.ones((nb - 1, 3), bool),
                np.eye(3 * (nb - 1)) / FALLBACK_POSE_STD,
            )
        else:
            mean, free, chol_t = self.prior.mean, self.prior.free, self.prior.chol_t
        if (
            self.digit_bones
        ):  # drop the digits' rows and columns: the Gaussian conditioned on them at their mean
            digits = np.zeros((nb - 1, 3), bool)
            digits[[b - 1 for b in self.digit_bones]] = True
            keep = ~digits[free]
            prec = chol_t.T @ chol_t
            chol_t = np.linalg.cholesky(prec[np.ix_(keep, keep)]).T
            free = free & ~digits
        return (
            torch.as_tensor(mean, dtype=torch.float32, device=dev),
            torch.as_tensor(free, device=dev),
            torch.as_tensor(chol_t, dtype=torch.float32, device=dev),
        )

    def _bone_sets(self, free: np.ndarray) -> list[tuple[np.ndarray, np.ndarray] | None]:
        """Per bone: the vertices (and weights) that move with it, for its rotation's initial guess.

        A bone's set is its skinning weight plus that of the descendants it carries rigidly (bones whose pose the
        prior holds fixed, e.g. the fingers); vertices of at least 30 % of that weight count, and a bone needs 6.
        """
        parents = list(self.body.bone_parents)
        nb = len(parents)
        carried = np.eye(nb, dtype=bool)
        fixed = np.concatenate([[False], ~free.any(axis=1)])
        for b in range(nb):
            a = b
            while fixed[a] and parents[a] >= 0:
                a = parents[a]
                carried[a, b] = True
        sets: list[tuple[np.ndarray, np.ndarray] | None] = []
        for b in range(nb):
            w = self.skin[:, carried[b]].sum(axis=1)
            idx = np.flatnonzero(w >= 0.3)
            sets.append((idx, w[idx]) if len(idx) >= 6 and not fixed[b] else None)
        return sets

    def _initial_pose(self, local: torch.Tensor, mean: torch.Tensor, free: torch.Tensor) -> torch.Tensor:
        """(B, J, 3) local-ref axis-angle whose bones point like the target's: per-bone Kabsch, then L = G_p^T G."""
        batch, dev = local.shape[0], local.device
        parents = list(self.body.bone_parents)
        sets = self._bone_sets(free.cpu().numpy())
        eye = torch.eye(3, device=dev).expand(batch, 3, 3)
        world: list[torch.Tensor] = []
        order = sorted(range(len(parents)), key=lambda b: self._depth(b))
        world = [eye] * len(parents)
        for b in order:
            if sets[b] is None:
                world[b] = world[parents[b]] if parents[b] >= 0 else eye
                continue
            idx, w = (torch.as_tensor(a, device=dev) for a in sets[b])
            world[b] = kabsch(self.template[idx], local[:, idx], w)[0]
        rel = [
            world[b] if parents[b] < 0 else world[parents[b]].transpose(1, 2) @ world[b]
            for b in range(len(parents))
        ]
        pose = roma.rotmat_to_rotvec(torch.stack(rel, dim=1).float())
        body_pose = torch.where(free, pose[:, 1:], mean)
        return torch.cat([pose[:, :1], body_pose], dim=1)

    def _depth(self, b: int) -> int:
        d, parents = 0, self.body.bone_parents
        while parents[b] >= 0:
            b, d = parents[b], d + 1
        return d

    @torch.no_grad()
    def _initial_shape(
        self, local: torch.Tensor, pose: torch.Tensor, vw: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Shape (B, S) and translation (B, 3) for a fixed pose: Gauss-Newton steps, finite-difference Jacobian.

        Height and build move every vertex (a tall person's hands are 10+ cm off at the default shape), which
        first-order steps correct slowly; a few Gauss-Newton steps on these 9 unknowns do it at the cost of
        ``(S + 1) x GN_STEPS`` batched forward passes.
        """
        body, dev = self.body, local.device
        batch, nv, ns = local.shape[0], local.shape[1], body.num_shape
        shape = torch.full((batch, ns), 0.5, device=dev)
        trans = torch.zeros(batch, 3, device=dev)
        prior = 0.5e-6 * self.shape_prior_weight * torch.tensor(SHAPE_STD, device=dev) ** -2  # data in m^2
        sq_w = vw.sqrt()[None, :, None, None]
        for _ in range(GN_STEPS):
            probe = shape[:, None].repeat(1, ns + 1, 1)
            probe[:, 1:] += GN_EPS * torch.eye(ns, device=dev)
            out = body(pose.repeat_interleave(ns + 1, 0), probe.reshape(-1, ns)).vertices.reshape(
                batch, ns + 1, nv, 3
            )
            jac_s = (out[:, 1:] - out[:, :1]) / GN_EPS  # (B, S, V, 3)
            jac_t = torch.eye(3, device=dev)[None, :, None, :].expand(batch, 3, nv, 3)
            jac = (torch.cat([jac_s, jac_t], 1) * sq_w.transpose(1, 2)).reshape(batch, ns + 3, -1).double()
            res = ((local - out[:, 0] - trans[:, None]) * sq_w[:, :, :, 0]).reshape(batch, -1).double()
            reg = torch.cat([prior, torch.zeros(3, device=dev)]).double()
            step_ = torch.cat(
                [(torch.tensor(SHAPE_MEAN, device=dev) - shape) * prior, torch.zeros(batch, 3, device=dev)], 1
            )
            lhs = jac @ jac.transpose(1, 2) + torch.diag_embed(reg + 1e-9)
            delta = torch.linalg.solve(lhs, (jac @ res[..., None])[..., 0] + step_.double()).float()
            shape = (shape + delta[:, :ns]).clamp(0.0, 1.0)
            trans = trans + delta[:, ns:]
        return shape, trans

    def __call__(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit pose, shape and a rigid transform to (B, V, 3) metres; returns (fitted (B, V, 3), RMS (B,)) in m."""
        body, dev = self.body, target.device
        batch = target.shape[0]
        rot, trans0 = kabsch(self.template, target, self.torso_weight)  # rest torso -> predicted torso
        local = torch.einsum("bij,bvi->bvj", rot, target - trans0[:, None])  # the mesh in the body's frame
        mean, free, chol_t = self._prior_tensors(dev)
        vw = self.data_weight.to(dev)
        pose0 = self._initial_pose(local, mean, free)
        shape, trans = self._initial_shape(local, pose0, vw)
        root = pose0[:, 0].clone().requires_grad_(True)
        body_free = pose0[:, 1:][:, free].clone().requires_grad_(True)
        trans.requires_grad_(True)
        shape.requires_grad_(True)
        opt = torch.optim.Adam(
            [{"params": [root, body_free, shape], "lr": self.lr}, {"params": [trans], "lr": self.lr * 0.1}]
        )
        bases = [g["lr"] for g in opt.param_groups]

        def pose_of() -> torch.Tensor:
            full = mean.expand(batch, -1, -1).clone()
            full[:, free] = body_free
            return torch.cat([root[:, None], full], dim=1)

        with torch.enable_grad():
            for step in range(self.steps):
                scale = 0.5 * (1.0 + math.cos(math.pi * step / max(self.steps, 1)))
                for g, base in zip(opt.param_groups, bases, strict=True):
                    g["lr"] = base * (0.05 + 0.95 * scale)
                opt.zero_grad(set_to_none=True)
                out = body(pose_of(), shape, trans)
                data = (((out.vertices - local) ** 2).sum(-1) * vw).sum(-1) * 1e6  # mm^2
                prior = 0.5 * (((body_free - mean[free]) @ chol_t.T) ** 2).sum(-1)
                shape_prior = self.shape_prior(shape)
                loss = data + self.pose_prior_weight * prior + self.shape_prior_weight * shape_prior
                loss.sum().backward()
                opt.step()
                with torch.no_grad():
                    shape.clamp_(0.0, 1.0)
        with torch.no_grad():
            fitted_local = body(pose_of(), shape, trans).vertices
            rms = ((fitted_local - local) ** 2).sum(-1).mean(-1).sqrt()
            fitted = torch.einsum("bij,bvj->bvi", rot, fitted_local) + trans0[:, None]
            params = [x.detach().cpu().double().numpy() for x in (pose_of(), shape, trans, rot, trans0)]
            self.last_fits = [BodyFit(*(x[i] for x in params), float(rms[i])) for i in range(batch)]
        logger.debug(
            "refine fit: %d steps, RMS %.1f mm (mean over %d)", self.steps, float(rms.mean()) * 1e3, batch
        )
        return fitted, rms
