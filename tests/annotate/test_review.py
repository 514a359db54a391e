"""`p2m annotate review`: token, loopback binding, exact saves, conflicts, concurrency, and a real headless browser."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestClient, TestServer
from PIL import Image, ImageDraw

from p2m.annotate.review import (
    ConflictError,
    ReviewStore,
    annotation_etag,
    apply_edit,
    create_app,
    is_rejected,
    start_review_server,
)
from p2m.annotate.validate import validate
from p2m.camera import Camera, bbox_from_joints
from p2m.errors import LayoutError, P2MError
from p2m.joints import COCO_SKELETON, COCO_TO_H36M_PARENTS, coco_to_h36m
from p2m.layout import DatasetWriter, subject_file

TOKEN = "test-token-123"
W, H = 640, 480
# A standing person, COCO-17 order, in px around the hip centre, about 300 px tall.
TEMPLATE = np.array([
    [0, -150], [-8, -158], [8, -158], [-18, -152], [18, -152], [-40, -110], [40, -110], [-55, -55], [55, -55],
    [-62, -5], [62, -5], [-25, 0], [25, 0], [-28, 70], [28, 70], [-30, 140], [30, 140],
], dtype=float)  # fmt: skip
CAM = Camera.look_at([0.0, -4500.0, 1500.0], [0.0, 0.0, 900.0], f=[850.0, 850.0], c=[320.0, 240.0])


def person_2d(cx: float, cy: float, s: float = 1.0) -> np.ndarray:
    """(17, 3) COCO keypoints px + v: the template at (cx, cy); one ear occluded (v 1)."""
    kp = np.c_[TEMPLATE * [-s, s] + [cx, cy], np.full(17, 2.0)]  # facing the camera: left on the image right
    kp[4, 2] = 1
    return np.round(kp, 3)


def annotation_2d(kp: np.ndarray) -> dict:
    return {"bbox": bbox_from_joints(kp), "keypoints": kp, "joints_2d_h36m": coco_to_h36m(kp)}


def pose_3d() -> np.ndarray:
    """(17, 3) H36M world mm: a person standing at the origin (same as tests/_layout_helpers, no noise)."""
    return np.array(
        [
            [0, 0, 900],
            [-130, 0, 900],
            [-130, 0, 480],
            [-130, 0, 60],
            [130, 0, 900],
            [130, 0, 480],
            [130, 0, 60],
            [0, 0, 1150],
            [0, 0, 1400],
            [0, -80, 1500],
            [0, 0, 1650],
            [180, 0, 1400],
            [200, 0, 1120],
            [210, 0, 860],
            [-180, 0, 1400],
            [-200, 0, 1120],
            [-210, 0, 860],
        ],
        dtype=float,
    )


def annotation_3d(X: np.ndarray) -> dict:
    uv = CAM.project(X)
    j2d = np.c_[uv, np.full(17, 2.0)]
    coco = np.zeros((17, 3))
    for c_idx, h_idx in {
        0: 9,
        5: 11,
        6: 14,
        7: 12,
        8: 15,
        9: 13,
        10: 16,
        11: 4,
        12: 1,
        13: 5,
        14: 2,
        15: 6,
        16: 3,
    }.items():
        coco[c_idx] = [*uv[h_idx], 2]
    return {"bbox": bbox_from_joints(j2d), "keypoints": coco, "joints_2d_h36m": j2d}


def draw(path: Path, people: list[np.ndarray]) -> None:
    """A plain image: a gradient and each person's limbs in grey (so a screenshot has something to match)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    yy = np.linspace(0, 1, H)[:, None, None]
    img = (np.array([38, 52, 70]) * (1 - yy) + np.array([120, 110, 96]) * yy).repeat(W, axis=1)
    im = Image.fromarray(img.astype(np.uint8))
    d = ImageDraw.Draw(im)
    for kp in people:
        for a, b in COCO_SKELETON:
            if kp[a, 2] > 0 and kp[b, 2] > 0:
                d.line([tuple(kp[a, :2]), tuple(kp[b, :2])], fill=(200, 196, 188), width=9)
        d.ellipse([kp[0, 0] - 16, kp[0, 1] - 20, kp[0, 0] + 16, kp[0, 1] + 14], fill=(214, 190, 170))
    im.save(path, quality=90)


def build_dataset(root: Path) -> dict[str, int]:
    """subject 1: two people (2D only), one person with 3D, an empty image; subject 2: one person. Returns ids."""
    a, b, c = person_2d(200, 250), person_2d(440, 240, 0.9), person_2d(320, 250)
    X = pose_3d()
    ann3d = annotation_3d(X)
    draw(root / "images" / "s1" / "two.jpg", [a, b])
    draw(root / "images" / "s1" / "three_d.jpg", [ann3d["keypoints"]])
    draw(root / "images" / "s1" / "empty.jpg", [])
    draw(root / "images" / "s2" / "one.jpg", [c])
    base = {"width": W, "height": H, "action_idx": 1, "subaction_idx": 1, "cam_idx": 1}
    with DatasetWriter(root, "rev", info={"version": "test"}) as w:
        for s in (1, 2):
            w.add_camera(s, 1, CAM)
        _, (two_a, two_b) = w.add_frame(
            1, {"file_name": "s1/two.jpg", **base, "frame_idx": 0}, [annotation_2d(a), annotation_2d(b)]
        )
        _, (three_d,) = w.add_frame(
            1, {"file_name": "s1/three_d.jpg", **base, "frame_idx": 1}, [ann3d], joints_3d_world=X
        )
        w.add_frame(1, {"file_name": "s1/empty.jpg", **base, "frame_idx": 2}, [])
        _, (one,) = w.add_frame(2, {"file_name": "s2/one.jpg", **base, "frame_idx": 0}, [annotation_2d(c)])
    return {"two_a": two_a, "two_b": two_b, "three_d": three_d, "one": one}


def data_path(root: Path, subject: int = 1) -> Path:
    return subject_file(root, "rev", subject, "data")


def load(root: Path, subject: int = 1) -> dict:
    return json.loads(data_path(root, subject).read_text())


def ann_of(data: dict, ann_id: int) -> dict:
    return next(a for a in data["annotations"] if a["id"] == ann_id)


def without(data: dict, ann_id: int) -> dict:
    out = copy.deepcopy(data)
    out["annotations"] = [a for a in out["annotations"] if a["id"] != ann_id]
    return out


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    root = tmp_path / "ds"
    return root, build_dataset(root)


def page_origin(c: TestClient) -> dict[str, str]:
    """The Origin header a browser sends with the page's saves (the server refuses a POST without it)."""
    return {"Origin": f"http://127.0.0.1:{c.port}"}


@pytest.fixture
async def client(dataset):
    root, _ = dataset
    async with TestClient(TestServer(create_app(root, TOKEN), host="127.0.0.1")) as c:
        c.session.headers.update(page_origin(c))
        yield c


def q(path: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}token={TOKEN}"


async def post(client, ann_id, body):
    return await client.post(q(f"/api/annotation/{ann_id}"), json=body)


# ---------------------------------------------------------------------------------------------- HTTP surface
async def test_every_route_needs_the_token(client, dataset):
    _, ids = dataset
    for path in (
        "/",
        "/api/info",
        "/api/page/0",
        f"/api/annotation/{ids['one']}",
        "/static/review.js",
        "/image/1",
    ):
        for suffix in ("", "?token=wrong", f"?token={TOKEN}x"):
            r = await client.get(path + suffix)
            assert r.status == 403, (path, suffix)
            assert "token" in (await r.json())["error"]
    r = await client.post(f"/api/annotation/{ids['one']}", json={"etag": "x"})
    assert r.status == 403
    r = await client.get(q("/"))
    assert r.status == 200
    html = await r.text()
    assert f'content="{TOKEN}"' in html and "review.js" in html
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]
    offline = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in offline and "https://" not in offline  # nothing from the network
    r = await client.get("/api/info", headers={"X-P2M-Token": TOKEN})
    assert r.status == 200 and (await r.json())["count"] == 4
    for name in ("review.js", "review.css"):
        r = await client.get(q(f"/static/{name}"))
        assert r.status == 200 and "http" not in (await r.text()).replace("http://www.w3.org/2000/svg", "")
    assert (await client.get(q("/static/..%2Freview.py"))).status == 404


async def test_binds_loopback_only(dataset):
    root, _ = dataset
    server = await start_review_server(root, port=0, token=TOKEN)
    try:
        assert server.host == "127.0.0.1"
        assert server.url == f"http://127.0.0.1:{server.port}/?token={TOKEN}"
        addresses = server.runner.addresses  # what the listening sockets are bound to
        assert addresses and all(a[0] == "127.0.0.1" for a in addresses)
        async with ClientSession() as s, s.get(server.url) as r:
            assert r.status == 200
        other = _non_loopback_ip()
        if other is not None:  # the same port on another address of this machine must refuse
            with pytest.raises(OSError), socket.create_connection((other, server.port), timeout=2):
                pass
    finally:
        await server.close()


async def test_taken_port_and_non_dataset_give_clear_errors(dataset, tmp_path):
    root, _ = dataset
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(P2MError, match=f"cannot listen on 127.0.0.1:{port}.*pick another --port"):
            await start_review_server(root, port=port)
    with pytest.raises(LayoutError, match="no annotations/ folder"):
        await start_review_server(tmp_path, port=0)
    (tmp_path / "empty" / "annotations").mkdir(parents=True)
    with pytest.raises(LayoutError, match="nothing to review"):
        ReviewStore(tmp_path / "empty")


def _non_loopback_ip() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent; picks the outgoing interface
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


async def test_pages_and_images(client, dataset):
    root, ids = dataset
    r = await client.get(q("/api/page/0"))
    page = await r.json()
    assert page["count"] == 4 and page["image"]["file_name"] == "s1/two.jpg" and page["has_3d"] is False
    assert [e["annotation"]["id"] for e in page["annotations"]] == [ids["two_a"], ids["two_b"]]
    assert page["annotations"][0]["etag"] == annotation_etag(ann_of(load(root), ids["two_a"]))
    page1 = await (await client.get(q("/api/page/1"))).json()
    assert page1["has_3d"] is True
    r = await client.get(q("/" + page["image_url"]))
    assert r.status == 200 and await r.read() == (root / "images" / "s1" / "two.jpg").read_bytes()
    r = await client.get(q("/api/page/3"))
    assert (await r.json())["data_file"] == "rev_subject2_data.json"
    for bad in ("4", "-1", "x"):
        r = await client.get(q(f"/api/page/{bad}"))
        assert r.status == 404 and "page" in (await r.json())["error"]
    (root / "images" / "s1" / "empty.jpg").unlink()
    page2 = await (await client.get(q("/api/page/2"))).json()
    assert page2["image_url"] is None and page2["annotations"] == []
    r = await client.get(q("/image/999"))
    assert r.status == 404 and "image id 999" in (await r.json())["error"]


async def test_bad_ids_are_404_with_a_clear_message(client, dataset):
    root, ids = dataset
    before = data_path(root).read_bytes()
    for bad, expect in (("999", "annotation id 999 is in no data.json"), ("abc", "'abc' is not an integer")):
        for r in (await client.get(q(f"/api/annotation/{bad}")), await post(client, bad, {"etag": "e"})):
            assert r.status == 404
            assert expect in (await r.json())["error"]
    assert data_path(root).read_bytes() == before


async def test_malformed_body_is_400_naming_the_field(client, dataset):
    root, ids = dataset
    before = data_path(root).read_bytes()
    ann = ann_of(load(root), ids["two_a"])
    etag = annotation_etag(ann)
    kp = list(ann["keypoints"])
    url = q(f"/api/annotation/{ids['two_a']}")
    r = await client.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and "request body: invalid JSON at line 1 column 2" in (await r.json())["error"]
    cases = [
        ([1, 2], "JSON object"),
        ({"keypoints": kp}, "'etag'"),
        ({"etag": etag, "keypoints": kp[:50]}, "field 'keypoints': expected 51 numbers (17 x, y, v), got 50"),
        ({"etag": etag, "keypoints": kp[:3] + ["a"] + kp[4:]}, "value 3 (L_Eye x)"),
        ({"etag": etag, "keypoints": kp[:2] + [5] + kp[3:]}, "visibility of keypoint 0 (Nose) = 5"),
        (
            {"etag": etag, "keypoints": [W + 50, 10, 2] + kp[3:]},
            "keypoint 0 (Nose) at (690.0, 10.0) is outside",
        ),
        ({"etag": etag, "rejected": "yes"}, "field 'rejected'"),
        ({"etag": etag, "color": "red"}, "unknown field(s) ['color']"),
    ]
    for body, expect in cases:
        r = await client.post(url, json=body)
        assert r.status == 400, body
        assert expect in (await r.json())["error"], (body, await r.json())
    assert data_path(root).read_bytes() == before


# ---------------------------------------------------------------------------------------------- what a save writes
async def test_save_changes_exactly_that_keypoint_and_its_dependents(client, dataset):
    root, ids = dataset
    before, before2 = load(root), load(root, 2)
    old = ann_of(before, ids["two_a"])
    kp = list(old["keypoints"])
    kp[3 * 9] += 12.5  # L_Wrist x
    kp[3 * 9 + 1] -= 7.25
    r = await post(client, ids["two_a"], {"etag": annotation_etag(old), "keypoints": kp})
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["changed"] == [9] and body["etag"] == annotation_etag(body["annotation"])
    after = load(root)
    assert without(after, ids["two_a"]) == without(before, ids["two_a"]) and load(root, 2) == before2
    new = ann_of(after, ids["two_a"])
    assert new == body["annotation"]
    assert set(new) == set(old) | {"review"}
    assert new["keypoints"][:27] == old["keypoints"][:27] and new["keypoints"][30:] == old["keypoints"][30:]
    assert new["keypoints"][27:30] == [
        round(old["keypoints"][27] + 12.5, 2),
        round(old["keypoints"][28] - 7.25, 2),
        2,
    ]
    assert new["num_keypoints"] == old["num_keypoints"]
    # no 3D: H36M L_Wrist (13) follows; every other H36M joint is untouched
    h_changed = [h for h, parents in COCO_TO_H36M_PARENTS.items() if 9 in parents]
    assert h_changed == [13]
    assert new["joints_2d_h36m"][13][:2] == new["keypoints"][27:29]
    assert all(new["joints_2d_h36m"][j] == old["joints_2d_h36m"][j] for j in range(17) if j != 13)
    # the bbox was the bbox_from_joints box of the keypoints, so it is recomputed from the new ones
    new_kp = np.asarray(new["keypoints"], dtype=float).reshape(17, 3)
    assert np.allclose(new["bbox"], bbox_from_joints(new_kp), atol=0.01)
    assert new["area"] == pytest.approx(new["bbox"][2] * new["bbox"][3], abs=0.05)
    assert new["review"]["status"] == "accepted" and new["review"]["edited_keypoints"] == [9]
    assert "needs_refit" not in new["review"] and not is_rejected(new)
    report = validate(root)
    assert report.ok, [str(p) for p in report.problems]


async def test_save_on_a_3d_frame_keeps_the_projection_and_flags_a_refit(client, dataset):
    root, ids = dataset
    before = load(root)
    old = ann_of(before, ids["three_d"])
    kp = list(old["keypoints"])
    kp[3 * 13 + 1] += 20  # L_Knee down
    r = await post(client, ids["three_d"], {"etag": annotation_etag(old), "keypoints": kp})
    assert r.status == 200
    new = ann_of(load(root), ids["three_d"])
    assert new["joints_2d_h36m"] == old["joints_2d_h36m"]  # still the projection of joint_3d
    assert new["review"]["needs_refit"] is True and new["review"]["edited_keypoints"] == [13]
    assert validate(root).ok  # reprojection still holds: 3D and joints_2d_h36m agree


async def test_visibility_and_reject(client, dataset):
    root, ids = dataset
    old = ann_of(load(root), ids["two_b"])
    kp = list(old["keypoints"])
    kp[3 * 5 + 2] = 0  # L_Shoulder unlabelled: COCO stores x = y = 0
    kp[3 * 4 + 2] = 2  # R_Ear from occluded to visible
    r = await post(client, ids["two_b"], {"etag": annotation_etag(old), "keypoints": kp, "rejected": True})
    assert r.status == 200
    new = ann_of(load(root), ids["two_b"])
    assert new["keypoints"][15:18] == [0, 0, 0] and new["keypoints"][12:15] == old["keypoints"][12:14] + [2]
    assert new["num_keypoints"] == old["num_keypoints"] - 1
    # H36M Neck (8) and Torso (7) and L_Shoulder (11) lose a parent: unlabelled now
    for h in (7, 8, 11):
        assert new["joints_2d_h36m"][h] == [0.0, 0.0, 0.0]
    assert is_rejected(new) and new["review"]["edited_keypoints"] == [4, 5]
    r = await post(client, ids["two_b"], {"etag": annotation_etag(new), "rejected": False})
    assert r.status == 200
    again = ann_of(load(root), ids["two_b"])
    assert not is_rejected(again) and again["keypoints"] == new["keypoints"]
    assert validate(root).ok


def test_bbox_that_was_not_derived_only_grows():
    old = {"id": 1, "bbox": [100.0, 100.0, 50.0, 50.0], "area": 1234.0, "keypoints": [0] * 51}
    for k in range(17):
        old["keypoints"][3 * k : 3 * k + 3] = [110.0 + k, 120.0, 2]
    kp = np.asarray(old["keypoints"], dtype=float).reshape(17, 3).tolist()
    kp[0][:2] = [90.0, 170.0]  # outside to the left and below
    new, changed = apply_edit(old, {"width": 640, "height": 480}, kp, None, has_3d=False)
    assert changed == [0]
    assert new["bbox"] == [90.0, 100.0, 60.0, 70.0] and new["area"] == 1234.0  # area was not w*h: kept
    kp[0][:2] = [120.0, 120.0]  # inside: the box stays as it was
    new, _ = apply_edit(old, {"width": 640, "height": 480}, kp, None, has_3d=False)
    assert new["bbox"] == old["bbox"]


# ---------------------------------------------------------------------------------------------- concurrency
async def test_stale_save_is_a_409_conflict(client, dataset):
    root, ids = dataset
    old = ann_of(load(root, 2), ids["one"])
    etag = annotation_etag(old)
    kp1, kp2 = list(old["keypoints"]), list(old["keypoints"])
    kp1[0] += 5
    kp2[0] -= 5
    assert (await post(client, ids["one"], {"etag": etag, "keypoints": kp1})).status == 200
    r = await post(client, ids["one"], {"etag": etag, "keypoints": kp2})
    assert r.status == 409
    assert "changed by another save" in (await r.json())["error"]
    assert ann_of(load(root, 2), ids["one"])["keypoints"][0] == round(old["keypoints"][0] + 5, 2)


def _many_people(root: Path, n: int) -> list[int]:
    with DatasetWriter(root, "rev") as w:
        ids = []
        for i in range(n):
            kp = person_2d(100 + (i % 10) * 45, 240)
            _, (a,) = w.add_frame(
                1,
                {
                    "file_name": f"{i}.jpg",
                    "width": W,
                    "height": H,
                    "action_idx": 1,
                    "subaction_idx": 1,
                    "cam_idx": 1,
                    "frame_idx": i,
                },
                [annotation_2d(kp)],
            )
            ids.append(a)
    return ids


async def test_concurrent_saves_keep_every_accepted_change(tmp_path):
    root = tmp_path / "many"
    ids = _many_people(root, 40)
    before = load(root)
    async with TestClient(TestServer(create_app(root, TOKEN), host="127.0.0.1")) as c:
        c.session.headers.update(page_origin(c))

        # 40 saves of 40 different people of one file, all at once, from separate client sessions
        async def save_one(i: int, ann_id: int):
            old = ann_of(before, ann_id)
            kp = list(old["keypoints"])
            kp[0] += i + 1
            async with ClientSession(headers=page_origin(c)) as s:
                url = str(c.make_url(q(f"/api/annotation/{ann_id}")))
                async with s.post(url, json={"etag": annotation_etag(old), "keypoints": kp}) as r:
                    return r.status

        statuses = await asyncio.gather(*(save_one(i, a) for i, a in enumerate(ids)))
        assert statuses == [200] * len(ids)
        after = load(root)  # parses
        for i, a in enumerate(ids):
            assert ann_of(after, a)["keypoints"][0] == round(ann_of(before, a)["keypoints"][0] + i + 1, 2)
        # 12 tabs saving the same person from the same page load: exactly one wins, the rest get 409
        target = ann_of(after, ids[0])
        etag = annotation_etag(target)

        async def race(i: int):
            kp = list(target["keypoints"])
            kp[1] = 100 + i
            r = await c.post(q(f"/api/annotation/{ids[0]}"), json={"etag": etag, "keypoints": kp})
            return r.status, i

        results = await asyncio.gather(*(race(i) for i in range(12)))
        winners = [i for status, i in results if status == 200]
        assert len(winners) == 1 and sorted(s for s, _ in results) == [200] + [409] * 11
        final = load(root)
        assert ann_of(final, ids[0])["keypoints"][1] == 100 + winners[0]
        assert without(final, ids[0]) == without(after, ids[0])


_WORKER = """
import json, sys
from p2m.annotate.review import ReviewStore, annotation_etag
root, ids, shift = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3])
store = ReviewStore(root)
for a in ids:
    got = store.annotation(a)
    kp = list(got["annotation"]["keypoints"])
    kp[3] += shift
    store.save(a, {"etag": got["etag"], "keypoints": kp})
"""


def test_two_processes_saving_one_file_lose_nothing(tmp_path):
    root = tmp_path / "many"
    ids = _many_people(root, 30)
    before = load(root)
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(root), json.dumps(part), str(shift)])
        for part, shift in ((ids[0::2], 3.0), (ids[1::2], 5.0))
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    after = load(root)
    for i, a in enumerate(ids):
        assert ann_of(after, a)["keypoints"][3] == round(
            ann_of(before, a)["keypoints"][3] + (3.0, 5.0)[i % 2], 2
        )
    assert not list(root.glob("annotations/*.tmp")) and not list(root.glob("annotations/.*.tmp"))


def test_store_conflict_after_another_store_saved(dataset):
    root, ids = dataset
    tab1, tab2 = ReviewStore(root), ReviewStore(root)
    seen = tab1.annotation(ids["two_a"])
    kp = list(seen["annotation"]["keypoints"])
    kp[0] += 1
    tab2.save(ids["two_a"], {"etag": seen["etag"], "keypoints": kp})
    with pytest.raises(ConflictError):
        tab1.save(ids["two_a"], {"etag": seen["etag"], "rejected": True})


# ---------------------------------------------------------------------------------------------- CLI
@pytest.mark.timeout(120)
def test_cli_serves_and_stops_on_ctrl_c(dataset):
    root, _ = dataset
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "p2m", "annotate", "review", str(root), "--no-open"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"Reviewing {root} at http://127.0.0.1:"), line + proc.stderr.read()
        url = line.split(" at ", 1)[1].strip()
        import urllib.request

        with urllib.request.urlopen(url, timeout=10) as r:
            assert r.status == 200 and b"p2m review" in r.read()
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


# ---------------------------------------------------------------------------------------------- real browser
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def live(dataset):
    """The review server in a thread of its own (Selenium blocks), on 127.0.0.1 and a free port."""
    root, ids = dataset
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box: dict = {}

    def run():
        asyncio.set_event_loop(loop)
        box["server"] = loop.run_until_complete(start_review_server(root, port=0))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(30)
    yield root, ids, box["server"].url
    asyncio.run_coroutine_threadsafe(box["server"].close(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(30)


@pytest.fixture
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver, "
            "or run scripts/ensure-chromium as root)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.mark.timeout(180)
def test_browser_drag_toggle_reject_and_save(live, browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, ids, url = live
    wait = WebDriverWait(browser, 20)
    browser.get(url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-page") == "0")
    before, before2 = load(root), load(root, 2)

    def saved(n: int) -> None:
        browser.find_element(By.ID, "save").click()
        wait.until(lambda d: f"Saved {n} " in d.find_element(By.ID, "status").text)

    # zoom in with the wheel over person A's L_Wrist (COCO 9), then drag it by (+40, -25) screen px
    person, k, dx, dy = ids["two_a"], 9, 40, -25
    ctm = "return document.getElementById('view').getScreenCTM().a"
    fit_scale = browser.execute_script(ctm)
    dot = browser.find_element(By.ID, f"kp-{person}-{k}")
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(dot), 0, -300).perform()
    wait.until(lambda d: d.execute_script(ctm) > 1.3 * fit_scale)
    scale = browser.execute_script(ctm)
    assert ann_of(load(root), person) == ann_of(before, person)  # zooming changes nothing on disk
    ActionChains(browser).click_and_hold(dot).move_by_offset(dx, dy).release().perform()
    saved(1)
    after = load(root)
    old, new = ann_of(before, person), ann_of(after, person)
    assert new["keypoints"][3 * k] == pytest.approx(old["keypoints"][3 * k] + dx / scale, abs=0.5)
    assert new["keypoints"][3 * k + 1] == pytest.approx(old["keypoints"][3 * k + 1] + dy / scale, abs=0.5)
    assert new["keypoints"][3 * k + 2] == 2
    assert abs(dy / scale) > 3  # the drag really moved it by several image pixels
    rest = [i for i in range(51) if i // 3 != k]
    assert [new["keypoints"][i] for i in rest] == [old["keypoints"][i] for i in rest]
    assert without(after, person) == without(before, person) and load(root, 2) == before2
    dependents = {"keypoints", "bbox", "area", "joints_2d_h36m", "review"}
    assert {f: v for f, v in new.items() if f not in dependents} == {
        f: v for f, v in old.items() if f not in dependents
    }
    assert all(new["joints_2d_h36m"][j] == old["joints_2d_h36m"][j] for j in range(17) if j != 13)
    assert new["review"]["edited_keypoints"] == [k] and new["review"]["status"] == "accepted"
    browser.save_screenshot(str(tmp_path / "after-drag.png"))

    # person B: Nose (0) to occluded, then L_Hip (11) unlabelled, and reject B
    other = ids["two_b"]
    browser.find_element(By.CSS_SELECTOR, "#persons li:nth-child(2) .pname").click()
    browser.find_element(By.ID, f"vis-{other}-0-1").click()
    browser.find_element(By.ID, f"vis-{other}-11-0").click()
    browser.find_element(By.ID, f"reject-{other}").click()
    saved(1)
    final = load(root)
    old_b, new_b = ann_of(after, other), ann_of(final, other)
    assert new_b["keypoints"][0:3] == old_b["keypoints"][0:2] + [1]
    assert new_b["keypoints"][33:36] == [0, 0, 0]
    assert [new_b["keypoints"][i] for i in range(3, 51) if i // 3 != 11] == [
        old_b["keypoints"][i] for i in range(3, 51) if i // 3 != 11
    ]
    assert new_b["num_keypoints"] == old_b["num_keypoints"] - 1
    assert is_rejected(new_b) and new_b["review"]["edited_keypoints"] == [0, 11]
    assert without(final, other) == without(after, other) and load(root, 2) == before2
    assert "rejected" in browser.find_element(By.ID, "persons").text

    # paging: next goes to the 3D frame and shows its one person
    browser.find_element(By.ID, "next").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-page") == "1")
    assert browser.find_elements(By.ID, f"kp-{ids['three_d']}-0")
    assert validate(root).ok
