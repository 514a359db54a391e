"""The review server under attack, over real loopback HTTP: hostile bodies, DNS rebinding, cross-site posts,
and the leftovers of a killed save."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession

from p2m.annotate.import_coco import import_coco
from p2m.annotate.review import start_review_server
from p2m.annotate.review_store import annotation_etag

TOKEN = "sec-token-456"
DATA = Path("annotations") / "coco_subject1_data.json"


def _coco() -> dict[str, Any]:
    kp: list[float] = []
    for i in range(17):
        kp += [10.0 + i, 20.0 + i, 2]
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100}],
        "annotations": [
            {
                "id": 5,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1, 1, 50, 50],
                "area": 2500.0,
                "iscrowd": 0,
                "keypoints": kp,
                "num_keypoints": 17,
            }
        ],
        "categories": [{"id": 1, "name": "person"}],
        "licenses": [],
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    src = tmp_path / "coco.json"
    src.write_text(json.dumps(_coco()))
    import_coco(src, tmp_path / "ds", with_images=False, progress=False)
    return tmp_path / "ds"


@pytest.fixture
async def server(dataset: Path):
    srv = await start_review_server(dataset, port=0, token=TOKEN)
    try:
        yield srv
    finally:
        await srv.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _origin(server) -> dict[str, str]:
    return {"Origin": f"http://127.0.0.1:{server.port}"}


async def _save(server, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{server.port}/api/annotation/1?token={TOKEN}"
    async with (
        ClientSession() as s,
        s.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as r,
    ):
        return r.status, await r.json()


async def _etag(server) -> str:
    async with (
        ClientSession() as s,
        s.get(f"http://127.0.0.1:{server.port}/api/annotation/1?token={TOKEN}") as r,
    ):
        return (await r.json())["etag"]


# ------------------------------------------------------------------------------------------ hostile bodies
async def test_hostile_save_bodies_are_400_with_one_line_and_nothing_written(server, dataset: Path) -> None:
    before = _sha(dataset / DATA)
    etag = await _etag(server)
    deep = b'{"etag": "x", "keypoints": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    long_int = b'{"etag": "x", "keypoints": [' + b"7" * 5000 + b"]}"
    kp400 = [int("9" * 400)] + [20.0, 2] * 25
    cases = [
        (
            deep,
            f"request body: invalid JSON at line 1 column {deep.index(b'[') + 500}: arrays/objects nested "
            "more than 500 levels deep",
        ),
        (
            long_int,
            f"request body: invalid JSON at line 1 column {long_int.index(b'7') + 1}: an integer of more "
            "than 4300 digits",
        ),
        (
            json.dumps({"etag": etag, "keypoints": kp400}).encode(),
            f"field 'keypoints': value 0 (Nose x) = {'9' * 37}... (400 characters), expected a finite number",
        ),
        (b"\xff\xfe{}", "request body: not UTF-8 text (byte 0: invalid start byte)"),
    ]
    for body, message in cases:
        status, answer = await _save(server, body, _origin(server))
        assert (status, answer) == (400, {"error": message})
    assert _sha(dataset / DATA) == before
    # the same server still saves a good edit
    kp = [30.0, 40.0, 2] + _coco()["annotations"][0]["keypoints"][3:]
    status, answer = await _save(
        server, json.dumps({"etag": etag, "keypoints": kp}).encode(), _origin(server)
    )
    assert status == 200 and answer["changed"] == [0]


# ------------------------------------------------------------------------------------- Host and Origin
@pytest.mark.parametrize(
    "host",
    [
        "evil.example:{port}",
        "127.0.0.1:{other}",
        "127.0.0.1",
        "localhost.evil:{port}",
        "127.0.0.2:{port}",
        "0.0.0.0:{port}",
        "",
    ],
)
async def test_a_foreign_host_header_is_refused(server, host: str) -> None:
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends Host: evil.example."""
    value = host.format(port=server.port, other=server.port + 1)
    url = f"http://127.0.0.1:{server.port}/api/info?token={TOKEN}"
    async with ClientSession() as s, s.get(url, headers={"Host": value}) as r:
        assert r.status == 403
        error = (await r.json())["error"]
    allowed = ", ".join(sorted(f"{h}:{server.port}" for h in ("127.0.0.1", "localhost", "[::1]")))
    assert error == (
        f"Host {value!r} is not this server ({allowed}): refused, as a page of another site "
        "rebinding its name to this address would be"
    )


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "localhost:{port}", "LOCALHOST:{port}", "[::1]:{port}"])
async def test_loopback_host_names_are_served(server, host: str) -> None:
    url = f"http://127.0.0.1:{server.port}/api/info?token={TOKEN}"
    async with ClientSession() as s, s.get(url, headers={"Host": host.format(port=server.port)}) as r:
        assert r.status == 200 and (await r.json())["count"] == 1


@pytest.mark.parametrize(
    "origin",
    [
        None,
        "null",
        "http://evil.example",
        "http://127.0.0.1:{other}",
        "https://127.0.0.1:{port}",
        "http://127.0.0.1:{port}.evil.example",
    ],
)
async def test_a_save_from_another_origin_is_refused(server, dataset: Path, origin: str | None) -> None:
    before = _sha(dataset / DATA)
    etag = await _etag(server)
    headers = {} if origin is None else {"Origin": origin.format(port=server.port, other=server.port + 1)}
    body = json.dumps({"etag": etag, "rejected": True}).encode()
    status, answer = await _save(server, body, headers)
    shown = repr(headers.get("Origin", ""))
    assert (status, answer) == (
        403,
        {
            "error": f"POST with Origin {shown}: changes are accepted only from the "
            f"review page itself (Origin http://127.0.0.1:{server.port})"
        },
    )
    assert _sha(dataset / DATA) == before
    for good in (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}"):
        status, answer = await _save(server, body, {"Origin": good})
        assert status == 200, answer
        body = json.dumps({"etag": answer["etag"], "rejected": True}).encode()


# ------------------------------------------------------------------------------------ a killed save's leftovers
async def test_stale_temp_files_of_a_killed_save_are_removed_at_start(dataset: Path) -> None:
    data = dataset / DATA
    stale = [data.with_name(f".{data.name}.{suffix}.tmp") for suffix in ("k1ll3d_x", "a0b1c2d3")]
    for path in stale:
        path.write_text('{"images": [')  # what a save killed mid-write leaves
    other = data.with_name(f".{data.name}.backup")  # not one of ours: kept
    other.write_text("keep")
    unrelated = data.with_name(".coco_subject1_camera.json.zzzzzzzz.tmp")  # the review never writes cameras
    unrelated.write_text("{")
    srv = await start_review_server(dataset, port=0, token=TOKEN)
    try:
        assert not any(p.exists() for p in stale)
        assert other.read_text() == "keep" and unrelated.exists()
        assert annotation_etag(json.loads(data.read_text())["annotations"][0]) == await _etag(srv)
    finally:
        await srv.close()


async def test_a_hostile_annotation_on_disk_is_a_400_not_a_500(dataset: Path) -> None:
    """A data.json edited by hand with a 400-digit keypoint and image width: the page loads, a save is refused."""
    data = json.loads((dataset / DATA).read_text())
    data["annotations"][0]["keypoints"][0] = int("9" * 400)
    data["images"][0]["width"] = int("9" * 400)
    (dataset / DATA).write_text(json.dumps(data))
    before = _sha(dataset / DATA)
    srv = await start_review_server(dataset, port=0, token=TOKEN)
    try:
        async with ClientSession() as s, s.get(f"http://127.0.0.1:{srv.port}/api/page/0?token={TOKEN}") as r:
            assert r.status == 200
        kp = [30.0, 40.0, 2] + _coco()["annotations"][0]["keypoints"][3:]
        status, answer = await _save(
            srv, json.dumps({"etag": await _etag(srv), "keypoints": kp}).encode(), _origin(srv)
        )
        assert (status, answer) == (
            400,
            {
                "error": "annotation id 1: the stored field 'keypoints' is not 51 finite "
                "numbers, so an edit cannot be merged; fix the file first (`p2m "
                "annotate validate` names the problem)"
            },
        )
        status, answer = await _save(
            srv, json.dumps({"etag": await _etag(srv), "rejected": True}).encode(), _origin(srv)
        )
        assert (
            status == 200 and answer["annotation"]["review"]["status"] == "rejected"
        )  # rejecting still works
    finally:
        await srv.close()
    assert _sha(dataset / DATA) != before  # the rejection was saved ...
    assert json.loads((dataset / DATA).read_text())["annotations"][0]["keypoints"][0] == int(
        "9" * 400
    )  # ... only it
