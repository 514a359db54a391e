"""Mesh hierarchy: HEM coarsening, up-sampling, Laplacians, vertex order, on-disk cache."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.sparse as sp
import trimesh

from p2m.errors import ConfigError
from p2m.pose2mesh import graph
from p2m.pose2mesh.graph import (
    MeshHierarchy,
    build_hierarchy,
    hem_coarsen,
    hierarchy_cache_path,
    load_or_build_hierarchy,
    mesh_adjacency,
    normalized_laplacian,
)


def _sphere(subdivisions: int = 3) -> tuple[np.ndarray, int]:
    s = trimesh.creation.icosphere(subdivisions=subdivisions)
    return np.asarray(s.faces, dtype=np.int64), len(s.vertices)


def _faces(body) -> tuple[np.ndarray, int]:
    return body.faces.cpu().numpy(), body.num_vertices


def test_mesh_adjacency_is_the_edge_graph():
    faces, n = _sphere(2)
    a = mesh_adjacency(faces, n)
    assert (a != a.T).nnz == 0
    assert a.diagonal().sum() == 0
    assert set(np.unique(a.data)) == {1.0}
    edges = trimesh.Trimesh(np.zeros((n, 3)), faces, process=False).edges_unique
    assert a.nnz == 2 * len(edges)
    assert all(a[i, j] == 1 for i, j in edges[:50])


def test_hem_on_a_path_matches_by_degree_then_index():
    # path 0-1-2-3-4: degrees 1,2,2,2,1 -> visit 0 (pairs with 1), 4 (pairs with 3), 2 stays alone
    a = sp.csr_matrix(np.diag(np.ones(4), 1) + np.diag(np.ones(4), -1))
    cluster, coarse = hem_coarsen(a)
    assert cluster.tolist() == [0, 0, 2, 1, 1]
    assert coarse.shape == (3, 3)
    assert coarse[0, 0] == 2 and coarse[0, 2] == 1 and coarse[1, 2] == 1 and coarse[0, 1] == 0


def test_hierarchy_is_deterministic_and_halves(body_1229):
    faces, n = _faces(body_1229)
    h1 = build_hierarchy(faces, n, 4)
    h2 = build_hierarchy(faces.copy(), n, 4)
    assert h1.digest == h2.digest
    assert h1.num_vertices == h2.num_vertices
    for c1, c2 in zip(h1.clusters, h2.clusters):
        np.testing.assert_array_equal(c1, c2)
    assert h1.num_vertices[0] == 1229
    for fine, coarse in zip(h1.num_vertices[:-1], h1.num_vertices[1:]):
        assert fine / 2 <= coarse <= 0.6 * fine


@pytest.mark.parametrize("which", ["sphere", "body_1229", "body_615"])
def test_upsampling_rows_sum_to_one_and_every_level_connected(which, request):
    if which == "sphere":
        faces, n = _sphere(3)
    else:
        faces, n = _faces(request.getfixturevalue(which))
    h = build_hierarchy(faces, n, 4)
    for lv in range(h.num_levels - 1):
        up = h.upsample(lv)
        assert up.shape == (h.num_vertices[lv], h.num_vertices[lv + 1])
        np.testing.assert_allclose(np.asarray(up.sum(axis=1)).ravel(), 1.0)
        assert (up.getnnz(axis=1) == 1).all()
        counts = np.asarray(up.sum(axis=0)).ravel()
        assert set(np.unique(counts)) <= {1.0, 2.0}  # every cluster: a matched pair or a singleton
        np.testing.assert_allclose(np.asarray(h.pool(lv).sum(axis=1)).ravel(), 1.0)
        # matched pairs are neighbours on the finer level
        c = h.clusters[lv]
        for cid in np.flatnonzero(counts == 2)[:200]:
            i, j = np.flatnonzero(c == cid)
            assert h.adjacency[lv][i, j] > 0
    for lv in range(h.num_levels):
        assert h.components(lv) == 1, f"level {lv} of {which} is not connected"


def test_components_are_preserved_on_a_disconnected_mesh():
    faces, n = _sphere(2)
    two = np.concatenate([faces, faces + n])
    h = build_hierarchy(two, 2 * n, 3)
    assert [h.components(lv) for lv in range(h.num_levels)] == [2, 2, 2, 2]


def test_output_vertex_order_is_the_mesh_order(body_1229):
    faces, n = _faces(body_1229)
    h = build_hierarchy(faces, n, 3)
    # level 0 is the mesh itself, not a permutation of it
    assert (h.adjacency[0] != mesh_adjacency(faces, n)).nnz == 0
    a = mesh_adjacency(faces, n).toarray()
    d = a.sum(axis=1)
    lap = np.eye(n) - a / np.sqrt(d[:, None] * d[None, :])
    lmax = np.linalg.eigvalsh(lap)[-1]
    np.testing.assert_allclose(h.laplacian(0).toarray(), 2 * lap / lmax - np.eye(n), atol=1e-9)
    # coarse nodes are means of their members, addressed in mesh order
    x = np.random.default_rng(0).standard_normal((n, 3))
    coarse = h.coarse_vertices(x, 1)
    for cid in (0, 7, h.num_vertices[1] - 1):
        np.testing.assert_allclose(coarse[cid], x[h.clusters[0] == cid].mean(axis=0))
    # a batch axis gives the same answer per sample
    np.testing.assert_allclose(h.coarse_vertices(np.stack([x, 2 * x]), 2)[1], 2 * h.coarse_vertices(x, 2))


@pytest.mark.parametrize(("scaling", "lo", "hi"), [("chebnet", -1.0, 1.0), ("pose2mesh", -1.0, -0.5)])
def test_laplacian_spectrum(scaling, lo, hi):
    faces, n = _sphere(2)
    h = build_hierarchy(faces, n, 2)
    for lv in range(h.num_levels):
        ev = np.linalg.eigvalsh(h.laplacian(lv, scaling).toarray())
        assert ev.min() == pytest.approx(lo, abs=1e-6)
        assert ev.max() == pytest.approx(hi, abs=1e-6)


def test_joint_graph_keeps_self_loops():
    a = graph.joint_adjacency(3, [(0, 1)], [(1, 2)])
    lap = normalized_laplacian(a, keep_self_loops=True).toarray()
    assert lap[0, 0] == pytest.approx(1 - 1 / 2)  # self-loop weight 1 over degree 2
    assert normalized_laplacian(a).toarray()[0, 0] == pytest.approx(1.0)


def test_too_many_levels_is_a_config_error():
    faces, n = _sphere(0)  # 12 vertices
    with pytest.raises(ConfigError, match="cannot be coarsened"):
        build_hierarchy(faces, n, 12)


def test_cache_round_trip_and_repair(tmp_path, monkeypatch, caplog):
    faces, n = _sphere(2)
    path = hierarchy_cache_path(faces, n, 3, tmp_path)
    assert not path.exists()
    built = load_or_build_hierarchy(faces, n, 3, tmp_path)
    assert path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind

    def no_build(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(graph, "build_hierarchy", no_build)
    cached = load_or_build_hierarchy(faces, n, 3, tmp_path)
    assert cached.digest == built.digest and cached.num_vertices == built.num_vertices
    assert cached.lmax == built.lmax
    for a, b in zip(cached.adjacency, built.adjacency):
        assert (a != b).nnz == 0
    monkeypatch.undo()

    path.write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING, logger="p2m.pose2mesh.graph"):
        repaired = load_or_build_hierarchy(faces, n, 3, tmp_path)
    assert repaired.digest == built.digest
    assert "rebuilding" in caplog.text
    assert MeshHierarchy.from_bytes(path.read_bytes()).digest == built.digest
    # another level count is another file
    assert hierarchy_cache_path(faces, n, 2, tmp_path) != path
