"""Closest points on a triangle mesh and barycentric interpolation, for moving per-vertex data between meshes."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["as_numpy", "closest_point_on_triangles", "closest_points", "interpolate"]


def as_numpy(x: Any, dtype: Any = np.float64) -> np.ndarray:
    """A numpy copy-or-view of ``x`` (numpy array, list, or torch tensor on any device) with ``dtype``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def closest_point_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates of the point of triangle (a, b, c) closest to p, row by row.

    The region tests of Ericson, *Real-Time Collision Detection* (2005), section 5.1.5, vectorised.

    Args:
        p, a, b, c: (N, 3) float arrays.

    Returns:
        (N, 3) barycentric weights of (a, b, c), non-negative, summing to 1 (degenerate triangles give a corner
        or an edge point).
    """
    ab, ac = b - a, c - a
    d1, d2 = np.einsum("nd,nd->n", ab, p - a), np.einsum("nd,nd->n", ac, p - a)
    d3, d4 = np.einsum("nd,nd->n", ab, p - b), np.einsum("nd,nd->n", ac, p - b)
    d5, d6 = np.einsum("nd,nd->n", ab, p - c), np.einsum("nd,nd->n", ac, p - c)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    n = len(p)
    out = np.empty((n, 3))
    done = np.zeros(n, bool)
    zero, one = np.zeros(n), np.ones(n)

    def take(mask: np.ndarray, bary: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        sel = mask & ~done
        out[sel] = np.stack(bary, axis=1)[sel]
        done[sel] = True

    with np.errstate(divide="ignore", invalid="ignore"):
        take((d1 <= 0) & (d2 <= 0), (one, zero, zero))  # vertex regions
        take((d3 >= 0) & (d4 <= d3), (zero, one, zero))
        take((d6 >= 0) & (d5 <= d6), (zero, zero, one))
        t = np.nan_to_num(d1 / (d1 - d3))  # edge regions
        take((vc <= 0) & (d1 >= 0) & (d3 <= 0), (1 - t, t, zero))
        t = np.nan_to_num(d2 / (d2 - d6))
        take((vb <= 0) & (d2 >= 0) & (d6 <= 0), (1 - t, zero, t))
        t = np.nan_to_num((d4 - d3) / ((d4 - d3) + (d5 - d6)))
        take((va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0), (zero, 1 - t, t))
        denom = va + vb + vc  # inside the face
        v = np.where(denom != 0, vb / np.where(denom != 0, denom, 1), 1 / 3)
        w = np.where(denom != 0, vc / np.where(denom != 0, denom, 1), 1 / 3)
        take(np.ones(n, bool), (1 - v - w, v, w))
    return np.clip(out, 0.0, 1.0)


def closest_points(
    points: Any, vertices: Any, faces: Any, k: int = 16, chunk: int = 65536
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each point, the closest point on a triangle mesh (among the ``k`` faces with the nearest centroids).

    Exact whenever the closest face is among the ``k`` nearest centroids, which holds for points on or near
    a reasonably even mesh (the use here: two meshes of the same body).

    Args:
        points: (N, 3) query points.
        vertices: (V, 3) mesh vertices, same unit.
        faces: (F, 3) int vertex indices.
        k: candidate faces per point.
        chunk: points per vectorised step (memory ~ chunk * k * 200 bytes).

    Returns:
        ``(face, bary, distance)``: (N,) int face index, (N, 3) barycentric weights on that face, (N,) distance.
    """
    from scipy.spatial import cKDTree

    pts = as_numpy(points).reshape(-1, 3)
    verts = as_numpy(vertices)
    tris = as_numpy(faces, np.int64)
    if len(tris) == 0:
        raise ValueError("closest_points: the mesh has no faces")
    k = int(min(max(k, 1), len(tris)))
    tree = cKDTree(verts[tris].mean(axis=1))
    face = np.empty(len(pts), np.int64)
    bary = np.empty((len(pts), 3))
    dist = np.empty(len(pts))
    for start in range(0, len(pts), chunk):
        p = pts[start : start + chunk]
        _, cand = tree.query(p, k=k)
        cand = np.asarray(cand).reshape(len(p), k)
        corner = verts[tris[cand.ravel()]]  # (n*k, 3, 3)
        rep = np.repeat(p, k, axis=0)
        b = closest_point_on_triangles(rep, corner[:, 0], corner[:, 1], corner[:, 2])
        q = np.einsum("nk,nkd->nd", b, corner)
        d = np.linalg.norm(q - rep, axis=1).reshape(len(p), k)
        best = d.argmin(axis=1)
        rows = np.arange(len(p))
        face[start : start + len(p)] = cand[rows, best]
        bary[start : start + len(p)] = b.reshape(len(p), k, 3)[rows, best]
        dist[start : start + len(p)] = d[rows, best]
    return face, bary, dist


def interpolate(values: np.ndarray, faces: np.ndarray, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric interpolation of per-vertex values.

    Args:
        values: (V, ...) per-vertex values.
        faces: (F, 3) int.
        face: (N,) face index per sample.
        bary: (N, 3) weights per sample.

    Returns:
        (N, ...) interpolated values.
    """
    corner = values[faces[face]]  # (N, 3, ...)
    return np.einsum("nk,nk...->n...", bary, corner)
