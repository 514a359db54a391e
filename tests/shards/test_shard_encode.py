"""The fast sample encoder: its record is what np.load and webdataset read, its numbers are numpy's, its json is json."""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from webdataset.autodecode import decoders as wds_decoders

from p2m.camera import Camera
from p2m.layout import Sample
from p2m.shards.codec import iter_tar_samples
from p2m.shards.encode import (
    EncodeOptions,
    Job,
    SampleEncoder,
    _float_array,
    camera_array,
    camera_json,
    float32_bytes,
)

RNG = np.random.default_rng(7)
J17 = (RNG.normal(size=(17, 3)) * 300).tolist()


def _ragged() -> list:
    rows = [list(r) for r in J17]
    rows[0], rows[1] = rows[0][:2], rows[1] + [1.0]  # 17 rows, 51 numbers, not 17 x 3
    return rows


def _with(value: float) -> list:
    rows = [list(r) for r in J17]
    rows[5][1] = value
    return rows


CASES = [
    ("rows of 3", J17, (17, 3)),
    ("ints and bools", [[1, 2, True]] * 17, (17, 3)),
    ("tuples", [tuple(r) for r in J17], (17, 3)),
    ("nan", _with(float("nan")), (17, 3)),
    ("inf", _with(float("-inf")), (17, 3)),
    ("beyond float32", _with(1e39), (17, 3)),
    ("float32 max", _with(float(np.finfo(np.float32).max)), (17, 3)),
    ("ragged rows", _ragged(), (17, 3)),
    ("flat 51", [x for r in J17 for x in r], (17, 3)),
    ("numeric strings", [["1.5", "2", "3"]] * 17, (17, 3)),
    ("None inside", _with(None), (17, 3)),
    ("16 rows", J17[:16], (17, 3)),
    ("float64 array", np.asarray(J17), (17, 3)),
    ("float64 array with nan", np.where(np.eye(17, 3) > 0, np.nan, np.asarray(J17)), (17, 3)),
    ("float32 array", np.asarray(J17, np.float32), (17, 3)),
    ("int array", np.arange(51).reshape(17, 3), (17, 3)),
    ("bbox", [10.25, 20.5, 30.0, 40.125], (4,)),
    ("bbox of 3", [1.0, 2.0, 3.0], (4,)),
    ("bbox nested", [[1.0, 2.0], [3.0, 4.0]], (4,)),
    ("pose", RNG.normal(size=72).tolist(), None),
    ("pose rows", RNG.normal(size=(24, 3)).tolist(), None),
    ("pose with inf", [0.1, float("inf")], None),
    ("empty", [], None),
    ("scalar", 3.5, None),
    ("text", "abc", None),
    ("dict", {"a": 1}, None),
    ("missing", None, (17, 3)),
]


@pytest.mark.parametrize(("value", "shape"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_float32_bytes_decides_like_numpy(value, shape):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns when a cast overflows
        ref = _float_array(value, shape)
        got = float32_bytes(value, shape)
    if ref is None:
        assert got is None
    else:
        assert got == (ref.astype("<f4").tobytes(), ref.shape)


CAM = Camera.look_at([0.0, -4500.0, 1500.0], [0.0, 0.0, 900.0], f=[1145.0, 1144.0], c=[512.0, 515.0])


def _sample(image: dict | None = None, ann: dict | None = None, world=None, body=None, camera=CAM) -> Sample:
    world = np.asarray(J17) + [0.0, 0.0, 900.0] if world is None else world
    img = {
        "id": 7,
        "file_name": 'S1/a "quoted" \u00e9.jpg',
        "width": 1000.0,
        "height": 1000,
        "action_idx": 2,
        "subaction_idx": 1,
        "cam_idx": 1,
        "frame_idx": 3,
        **(image or {}),
    }
    annotation = {"id": "ann-7", "bbox": [10.1, 20.2, 300.3, 400.4], "joints_2d_h36m": J17, **(ann or {})}
    return Sample(
        dataset="h36m",
        subject=1,
        image=img,
        annotation=annotation,
        images_dir=Path("/nonexistent"),
        camera=camera,
        joints_3d_world=world,
        joints_3d_cam=None if camera is None else camera.world_to_camera(world),
        body_param=body,
    )


def _encode(sample: Sample, encoder: SampleEncoder | None = None):
    job = Job(
        "train", "h36m_s001_k", "h36m", 0, sample, camera_json(sample.camera), camera_array(sample.camera)
    )
    enc = (encoder or SampleEncoder(EncodeOptions(with_meta=True))).encode(job)
    if enc.skip:
        return enc, None, None
    [(key, fields)] = list(iter_tar_samples(io.BytesIO(enc.data + bytes(1024)), check=True))
    assert key == "h36m_s001_k" and list(fields) == ["json", "npy"]
    by_webdataset = wds_decoders["npy"](fields["npy"])
    record = np.load(io.BytesIO(fields["npy"]), allow_pickle=False)
    assert by_webdataset.dtype == record.dtype and by_webdataset.tobytes() == record.tobytes()
    return enc, json.loads(fields["json"]), {name: record[name] for name in record.dtype.names}


def test_json_member_holds_the_fields_as_json_would_write_them():
    body = {"model": "anny", "rig": "cmu_mb", "pose": [0.5] * 6, "shape": [1, 2], "trans": [0.0, 0.0, 0.9]}
    s = _sample({"source_url": "http://127.0.0.1/a.jpg", "license": "CC0-1.0", "cam_idx": 1}, body=body)
    enc, meta, arrays = _encode(s)
    bbox = arrays["bbox"]
    assert meta == {
        "key": "h36m_s001_k",
        "source": "h36m",
        "image_id": 7,
        "ann_id": "ann-7",
        "subject": 1,
        "action": 2,
        "subaction": 1,
        "cam": 1,
        "frame": 3,
        "person": 0,
        "file_name": 'S1/a "quoted" \u00e9.jpg',
        "width": 1000.0,
        "height": 1000,
        "bbox": meta["bbox"],
        "body_model": "anny",
        "body_rig": "cmu_mb",
        "source_url": "http://127.0.0.1/a.jpg",
        "license": "CC0-1.0",
        "camera": CAM.to_dict(),
    }
    assert np.array_equal(np.asarray(meta["bbox"], np.float32), bbox)  # the record's float32 values exactly
    assert bbox.tolist() == pytest.approx(s.annotation["bbox"])
    assert np.array_equal(arrays["j2d"], np.asarray(J17, np.float32))
    assert np.array_equal(arrays["j3d"], s.joints_3d_cam.astype(np.float32))
    assert np.array_equal(arrays["cam"], [1145.0, 1144.0, 512.0, 515.0])
    assert np.array_equal(arrays["R"], CAM.R.astype(np.float32))
    assert arrays["model"].item() == b"anny/cmu_mb" and arrays["pose"].shape == (6,)
    assert enc.fields == ("j2d", "j3d", "bbox", "cam", "R", "pose", "shape", "trans", "model", "json")
    assert enc.body_model == "anny/cmu_mb" and enc.body_shapes == {"pose": [6], "shape": [2], "trans": [3]}


def test_bad_values_skip_the_sample_or_drop_the_body_field():
    assert _encode(_sample(ann={"joints_2d_h36m": None}))[0].skip == "no_joints_2d"
    assert _encode(_sample(ann={"joints_2d_h36m": _with(float("nan"))}))[0].skip == "bad_joints_2d"
    world = np.asarray(J17) + 900.0
    world[3, 2] = np.inf
    with np.errstate(invalid="ignore"):
        assert _encode(_sample(world=world))[0].skip == "bad_joints_3d"
    assert _encode(_sample(ann={"bbox": [1.0, 2.0, 3.0]}))[0].skip == "bad_bbox"
    # a body field that is not finite is left out; the others stay
    enc, meta, arrays = _encode(
        _sample(body={"model": "smpl", "pose": [0.1, float("nan")], "shape": [1.0], "trans": [0.0, 0.0, 1.0]})
    )
    assert (
        "pose" not in arrays
        and arrays["shape"].shape == (1,)
        and enc.body_shapes == {"shape": [1], "trans": [3]}
    )
    # no camera: no j3d, no cam, no R, camera null; no body: no model
    enc, meta, arrays = _encode(_sample(camera=None))
    assert sorted(arrays) == ["bbox", "j2d"] and meta["camera"] is None and meta["body_model"] is None


def test_shared_body_records_are_converted_once_and_encode_the_same():
    encoder = SampleEncoder(EncodeOptions(with_meta=True))
    body = {
        "model": "smpl",
        "pose": RNG.normal(size=72).tolist(),
        "shape": [0.5] * 10,
        "trans": [0.0, 0.1, 2.0],
    }
    a = _encode(_sample(body=body), encoder)[0]
    b = _encode(_sample(body=body), encoder)[0]  # same record (a frame seen by another camera): cache hit
    c = _encode(_sample(body=json.loads(json.dumps(body))), encoder)[0]  # an equal, separate record
    d = _encode(_sample(body=body))[0]  # a fresh encoder
    assert a.data == b.data == c.data == d.data
    assert a.body_shapes is c.body_shapes  # one shapes object per body layout (the writer groups by it)
