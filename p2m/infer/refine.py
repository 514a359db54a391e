"""Rigid hands and feet for Pose2Mesh meshes: restore what a graph CNN blurs from the body model's own geometry.

A MeshNet mesh gets the body right but smears hands and feet into blobs. :func:`refine_extremities` replaces the
four extremities (each a bone subtree of the rig: ``LeftHand`` with its fingers, ``LeftFoot`` with its toes...)
with body-model geometry, by one of two methods:

* ``"fit"``: fit the body model's pose, shape and a global rotation / translation to the whole predicted mesh
  (:class:`p2m.infer.refine_fit.MeshFitter`: Kabsch initial guesses, Gauss-Newton on the shape, then batched
  Adam on the vertex L2 distance with a Gaussian pose prior over the CMU training poses and a shape prior; the
  blurred hand and foot vertices weigh ``EXTREMITY_DATA_WEIGHT``, fingers and toes are held rigid). The fitted
  mesh's hands and feet are blended in (``blend="extremities"``, the default), or the whole fitted mesh replaces
  the prediction (``blend="whole"``).
* ``"paste"``: take the template's (rest pose, default shape) hand and foot, scaled by the ratio of the
  predicted to the template skeleton length, and rigidly align each one (weighted Kabsch) to the predicted
  vertices around the joint: the extremity itself and the distal end of the forearm / shin.

The seam weight of an extremity is ``smoothstep`` of its skinning membership (the sum of the body's skinning
weights over the subtree's bones) between ``SEAM[0]`` and ``SEAM[1]``: 1 on the rigid part, 0 wherever the
membership is below ``SEAM[0]``, and exactly there every vertex is returned unchanged (``blend="extremities"``).
Vertex count and order are kept. Meshes are root-relative, in any rigid frame (e.g. the camera frame of
:class:`p2m.pose2mesh.model.Pose2MeshOutput`), in the unit given by ``unit_m`` (default millimetres).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from p2m.export.skin import body_skinning_weights
from p2m.infer.refine_fit import (
    FIT_LR,
    FIT_STEPS,
    POSE_PRIOR_WEIGHT,
    SHAPE_PRIOR_WEIGHT,
    MeshFitter,
    kabsch,
)
from p2m.joints import H36M_SKELETON

logger = logging.getLogger(__name__)

__all__ = [
    "BLENDS",
    "EXTREMITIES",
    "METHODS",
    "Extremity",
    "ExtremityRefiner",
    "RefineResult",
    "blur_extremities",
    "extremity_regions",
    "kabsch",
    "refine_extremities",
]

METHODS = ("fit", "paste")
BLENDS = ("extremities", "whole")
#: Extremity -> (root bone of its subtree, the bone it hangs from), by rig naming (anny cmu_mb, anny, SMPL).
EXTREMITIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "left_hand": (("LeftHand", "wrist.L", "left_wrist"), ("LeftForeArm", "lowerarm02.L", "left_elbow")),
    "right_hand": (("RightHand", "wrist.R", "right_wrist"), ("RightForeArm", "lowerarm02.R", "right_elbow")),
    "left_foot": (("LeftFoot", "foot.L", "left_ankle"), ("LeftLeg", "lowerleg02.L", "left_knee")),
    "right_foot": (("RightFoot", "foot.R", "right_ankle"), ("RightLeg", "lowerleg02.R", "right_knee")),
}
#: Skinning membership (low, high) of the seam: weight 0 at or below low, 1 at or above high.
SEAM = (0.05, 0.8)
#: Membership from which a vertex counts as part of the extremity (scored by the benchmark, pasted rigidly).
CORE = 0.5
#: Paste: radius (m, rest pose) around the extremity's joint within which the parent bone's vertices anchor it.
ANCHOR_RADIUS = 0.10
#: Fit: weight of the hand and foot vertices in the data term (the blurred part of the input; others weigh 1).
EXTREMITY_DATA_WEIGHT = 0.25


@dataclass(frozen=True)
class Extremity:
    """One hand or foot of a body model's mesh.

    Attributes:
        name: ``"left_hand"``, ``"right_hand"``, ``"left_foot"`` or ``"right_foot"``.
        bone: index of the subtree's root bone (``LeftHand``...); parent: the bone it hangs from (``LeftForeArm``).
        bones: indices of the subtree's bones (root first).
        membership: (V,) sum of the skinning weights over ``bones``, in [0, 1].
        weight: (V,) seam weight in [0, 1] (module docstring); 0 where ``membership <= SEAM[0]``.
        core: indices of the vertices with ``membership >= CORE`` (the extremity proper).
        limb: (V,) skinning weight of the extremity with the two bones above it (hand, forearm and upper arm),
            e.g. to draw the limb without the torso.
    """

    name: str
    bone: int
    parent: int
    bones: tuple[int, ...]
    membership: np.ndarray
    weight: np.ndarray
    core: np.ndarray
    limb: np.ndarray

    @property
    def region(self) -> np.ndarray:
        """Indices of the vertices a refinement may move (``weight > 0``)."""
        return np.flatnonzero(self.weight > 0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _find_bone(names: list[str], candidates: tuple[str, ...], what: str) -> int:
    for cand in candidates:
        if cand in names:
            return names.index(cand)
    raise ValueError(
        f"the body model's rig has no {what} bone (looked for {', '.join(candidates)}; it has "
        f"{', '.join(names[:8])}...)"
    )


def extremity_regions(
    body: Any, seam: tuple[float, float] = SEAM, skin: np.ndarray | None = None
) -> dict[str, Extremity]:
    """The hands and feet of a body model's mesh, from its skinning weights.

    Args:
        body: a body model layer (:func:`p2m.body.create`; rigs ``cmu_mb``, ``anny`` or SMPL's).
        seam: skinning membership (low, high) of the seam.
        skin: the body's (V, B) skinning weights if already at hand (:func:`p2m.export.skin.body_skinning_weights`).

    Returns:
        name -> :class:`Extremity`, in :data:`EXTREMITIES` order.

    Raises:
        ValueError: the rig lacks a hand or foot bone, or ``seam`` is not ``0 <= low < high <= 1``.
    """
    lo, hi = float(seam[0]), float(seam[1])
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"seam {seam!r}: expected (low, high) with 0 <= low < high <= 1")
    weights = body_skinning_weights(body) if skin is None else skin  # (V, B), rows sum to 1
    names, parents = list(body.bone_names), [int(p) for p in body.bone_parents]
    out: dict[str, Extremity] = {}
    for name, (roots, uppers) in EXTREMITIES.items():
        root = _find_bone(names, roots, name)
        subtree = [root]
        for i in range(len(names)):  # parents precede children in every rig p2m uses; walk up to be safe
            j = parents[i]
            while j >= 0 and j != root:
                j = parents[j]
            if j == root and i != root:
                subtree.append(i)
        member = np.clip(weights[:, subtree].sum(axis=1), 0.0, 1.0)
        weight = np.where(member > lo, _smoothstep((member - lo) / (hi - lo)), 0.0)
        upper = _find_bone(names, uppers, name)
        above = [upper] + ([parents[upper]] if parents[upper] >= 0 else [])
        limb = np.clip(member + weights[:, above].sum(axis=1), 0.0, 1.0)
        out[name] = Extremity(
            name, root, upper, tuple(subtree), member, weight, np.flatnonzero(member >= CORE), limb
        )
    return out


def _neighbour_mean_matrix(faces: np.ndarray, num_vertices: int) -> torch.Tensor:
    """(V, V) sparse row-stochastic matrix averaging each vertex's mesh neighbours."""
    f = np.asarray(faces, dtype=np.int64)
    i = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    j = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    key = np.unique(i * num_vertices + j)
    i, j = key // num_vertices, key % num_vertices
    deg = np.bincount(i, minlength=num_vertices).astype(np.float64)
    val = 1.0 / np.maximum(deg[i], 1.0)
    idx = torch.from_numpy(np.stack([i, j]))
    return torch.sparse_coo_tensor(idx, val, (num_vertices, num_vertices), check_invariants=False).coalesce()


def blur_extremities(
    vertices: torch.Tensor,
    faces: Any,
    weight: Any,
    iterations: int | None = None,
    step: float = 0.5,
    radius: float | None = None,
) -> torch.Tensor:
    """Laplacian smoothing weighted per vertex: a controlled stand-in for a graph CNN's blurred hands and feet.

    Each iteration moves vertex v by ``step * weight[v] * (mean of its neighbours - v)``. Give ``iterations``, or
    ``radius`` for a blur of about the same physical size on every topology: ``iterations = (radius / e)^2 / step``,
    ``e`` the mean length of the edges between weighted vertices (of the first mesh).

    Args:
        vertices: (B, V, 3) or (V, 3), any unit.
        faces: (F, 3) triangles.
        weight: (V,) per-vertex strength in [0, 1] (e.g. the sum of :class:`Extremity` weights); 0 keeps a vertex.
        iterations: smoothing iterations; radius: the blur's length scale, in the vertices' unit.
        step: step size per iteration (0..1).

    Returns:
        Smoothed vertices, same shape, dtype and device.
    """
    x = vertices[None] if vertices.dim() == 2 else vertices
    batch, nv, _ = x.shape
    w_np = np.asarray(weight, dtype=np.float64)
    if (iterations is None) == (radius is None):
        raise ValueError("blur_extremities: give one of iterations and radius")
    if iterations is None:
        f = np.asarray(faces, dtype=np.int64)
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        edges = edges[(w_np[edges] > 0).all(axis=1)]
        first = x[0].detach().double().cpu().numpy()
        mean_edge = (
            float(np.linalg.norm(first[edges[:, 0]] - first[edges[:, 1]], axis=1).mean())
            if len(edges)
            else 1.0
        )
        iterations = max(1, round((float(radius) / mean_edge) ** 2 / float(step)))
    avg = _neighbour_mean_matrix(np.asarray(faces), nv).to(device=x.device, dtype=torch.float64)
    w = torch.as_tensor(w_np, dtype=torch.float64, device=x.device)[:, None] * float(step)
    flat = x.double().permute(1, 0, 2).reshape(nv, batch * 3)
    for _ in range(int(iterations)):
        flat = flat + w * (torch.sparse.mm(avg, flat) - flat)
    out = flat.reshape(nv, batch, 3).permute(1, 0, 2).to(vertices.dtype)
    return out[0] if vertices.dim() == 2 else out


class RefineResult(NamedTuple):
    """What :func:`refine_extremities` returns (same container, shape, frame and unit as its input).

    Attributes:
        vertices: (B, V, 3) or (V, 3) the refined mesh, same vertex count and order.
        weight: (V,) how much of the body-model geometry each vertex took (1 on the rigid parts, 0 = unchanged).
        fitted: the fitted body mesh (``"fit"``), like ``vertices``; None for ``"paste"``.
        fit_rms: (B,) or () RMS vertex distance (input unit) of the fitted mesh to the input (``"fit"``), or of
            the aligned extremities to the input's (``"paste"``).
        fits: per mesh, the fitted body parameters (:class:`p2m.export.full.BodyFit`, frame of the input, m)
            (``"fit"``); None for ``"paste"``.
    """

    vertices: Any
    weight: np.ndarray
    fitted: Any
    fit_rms: Any
    fits: list[Any] | None = None


class ExtremityRefiner:
    """Refines hands and feet of meshes of one body model; holds what every call reuses (module docstring).

    Args:
        body: the body model layer whose topology the meshes have.
        method: ``"fit"`` or ``"paste"``.
        blend: ``"extremities"`` (blend hands and feet in through the seam weight) or ``"whole"`` (``"fit"``
            only: return the whole fitted mesh).
        unit_m: metres per input unit (1e-3: millimetres).
        steps, lr, pose_prior_weight, shape_prior_weight: the fit's Adam steps, learning rate and prior weights.
        extremity_data_weight: the fit's weight of hand and foot vertices in its data term (others weigh 1).
        rigid: the fit holds the bones inside each extremity (fingers, toes) at the pose prior's mean, so that
            a blob cannot bend them; the extremity's root bone (wrist, ankle) stays free.
        seam: skinning membership (low, high) of the seam.
    """

    def __init__(
        self,
        body: Any,
        method: str = "fit",
        blend: str = "extremities",
        *,
        unit_m: float = 1e-3,
        steps: int = FIT_STEPS,
        lr: float = FIT_LR,
        pose_prior_weight: float = POSE_PRIOR_WEIGHT,
        shape_prior_weight: float = SHAPE_PRIOR_WEIGHT,
        extremity_data_weight: float = EXTREMITY_DATA_WEIGHT,
        rigid: bool = True,
        seam: tuple[float, float] = SEAM,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"refine method {method!r}: expected one of {', '.join(METHODS)}")
        if blend not in BLENDS or (blend == "whole" and method != "fit"):
            raise ValueError(f"refine blend {blend!r}: expected 'extremities', or 'whole' with method 'fit'")
        self.body, self.method, self.blend, self.unit_m = body, method, blend, float(unit_m)
        self.skin = body_skinning_weights(body)  # (V, J) numpy
        self.regions = extremity_regions(body, seam, self.skin)
        self.weight = np.clip(sum(e.weight for e in self.regions.values()), 0.0, 1.0)
        with torch.no_grad():
            rest = body(torch.zeros(1, body.num_bones, 3, device=body.device))
        self.template = rest.vertices[0].detach()  # (V, 3) m, default shape, root head at the origin
        self.rest_heads = rest.bone_heads[0].detach()
        self.fitter: MeshFitter | None = None
        if method == "fit":
            member = np.clip(sum(e.membership for e in self.regions.values()), 0.0, 1.0)
            digits = tuple(b for e in self.regions.values() for b in e.bones[1:]) if rigid else ()
            self.fitter = MeshFitter(
                body,
                self.skin,
                1.0 - (1.0 - float(extremity_data_weight)) * member,
                digits,
                steps=steps,
                lr=lr,
                pose_prior_weight=pose_prior_weight,
                shape_prior_weight=shape_prior_weight,
            )

    # -------------------------------------------------------------------------------------------------- API
    def __call__(self, vertices: Any) -> RefineResult:
        """Refine (B, V, 3) or (V, 3) vertices (numpy or torch; see :func:`refine_extremities`)."""
        is_numpy = not isinstance(vertices, torch.Tensor)
        x = torch.as_tensor(np.asarray(vertices) if is_numpy else vertices)
        single = x.dim() == 2
        nv = self.template.shape[0]
        if x.dim() not in (2, 3) or x.shape[-2:] != (nv, 3):
            raise ValueError(
                f"vertices: shape {tuple(x.shape)}, expected (B, {nv}, 3) or ({nv}, 3) for the body "
                f"model's {getattr(self.body, 'topology', '')} mesh"
            )
        if not torch.is_floating_point(x):
            x = x.double()
        x64 = (x[None] if single else x).to(self.template.device, torch.float64)
        if self.fitter is not None:  # method "fit"
            fitted, rms = self.fitter((x64 * self.unit_m).float())
            geometry = fitted = fitted.double() / self.unit_m
        else:
            geometry, rms = self._paste(x64 * self.unit_m)
            geometry, fitted = geometry / self.unit_m, None
        if self.blend == "whole":
            refined, weight = geometry, np.ones(nv)
        else:  # blend in the input's unit: vertices of weight 0 come back bit for bit
            w = torch.as_tensor(self.weight, dtype=torch.float64, device=x64.device)[None, :, None]
            refined, weight = torch.where(w > 0, x64 + w * (geometry - x64), x64), self.weight

        def back(t: torch.Tensor | None) -> Any:
            if t is None:
                return None
            t = t.to(x.dtype).to(x.device)
            t = t[0] if single else t
            return t.numpy() if is_numpy else t

        rms = rms.double() / self.unit_m
        rms_out = (rms[0] if single else rms).cpu()
        fits = list(self.fitter.last_fits) if self.fitter is not None else None
        return RefineResult(
            back(refined), weight, back(fitted), rms_out.numpy() if is_numpy else rms_out, fits
        )

    # -------------------------------------------------------------------------------------------------- paste
    def _skeleton_length(self, vertices: torch.Tensor) -> torch.Tensor:
        reg = self.body.h36m_regressor.to(vertices)
        joints = torch.einsum("jv,bvc->bjc", reg, vertices)
        a, b = zip(*H36M_SKELETON, strict=True)
        return (joints[:, list(a)] - joints[:, list(b)]).norm(dim=-1).sum(-1)

    def _paste(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rigidly aligned template extremities for (B, V, 3) metres; returns (geometry, RMS (B,)) in m."""
        template = self.template.to(target)
        scale = self._skeleton_length(target) / self._skeleton_length(template[None])  # (B,)
        out = target.clone()
        sq, count = torch.zeros(target.shape[0], dtype=target.dtype, device=target.device), 0
        for ext in self.regions.values():
            head = self.rest_heads[ext.bone].to(template)
            dist = (template - head).norm(dim=-1)
            parent = torch.as_tensor(self.skin[:, ext.parent], device=target.device).to(template)
            anchor = torch.as_tensor(ext.membership, device=target.device).to(template)
            anchor = anchor + parent * torch.exp(-((dist / ANCHOR_RADIUS) ** 2))
            idx = torch.nonzero(anchor > 0.05).flatten()
            src = (template[idx] - head) * scale[:, None, None]
            rot, trans = kabsch(src, target[:, idx], anchor[idx])
            region = torch.as_tensor(ext.region, device=target.device)
            placed = (
                torch.einsum("bij,bvj->bvi", rot, (template[region] - head) * scale[:, None, None])
                + trans[:, None]
            )
            out[:, region] = placed
            core = torch.as_tensor(ext.core, device=target.device)
            core_pos = (
                torch.einsum("bij,bvj->bvi", rot, (template[core] - head) * scale[:, None, None])
                + trans[:, None]
            )
            sq = sq + ((core_pos - target[:, core]) ** 2).sum(-1).sum(-1)
            count += len(core)
        return out, (sq / max(count, 1)).sqrt()


def refine_extremities(
    vertices: Any, body: Any, method: str = "fit", blend: str = "extremities", **options: Any
) -> RefineResult:
    """Restore the hands and feet of predicted meshes from the body model's geometry (module docstring).

    Args:
        vertices: (B, V, 3) or (V, 3) numpy array or torch tensor: meshes on ``body``'s topology, root-relative,
            any rigid frame (e.g. Pose2Mesh's camera frame), unit ``unit_m`` (default millimetres).
        body: the body model layer (:func:`p2m.body.create`) of the meshes' topology.
        method: ``"fit"`` or ``"paste"``.
        blend: ``"extremities"`` or ``"whole"`` (``"fit"`` only).
        **options: keyword options of :class:`ExtremityRefiner` (``unit_m``, ``steps``, ``lr``, ...).

    Returns:
        A :class:`RefineResult` whose arrays have the input's container, shape and unit.

    Raises:
        ValueError: unknown method or blend, or vertices that do not fit the body model's mesh.
    """
    return ExtremityRefiner(body, method, blend, **options)(vertices)
