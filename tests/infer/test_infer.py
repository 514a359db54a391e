"""`p2m infer` on a tiny trained run: every checkpoint form, COCO / H36M / detect inputs, files, picture, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2m import joints as J
from p2m.errors import BodyModelError, CheckpointError, ConfigError, P2MError
from p2m.infer import infer
from p2m.infer.api import mesh_file_vertices
from p2m.infer.pose_input import head_top_from_coco, read_pose2d, to_model_joints
from p2m.infer.predictor import load_predictor, load_state, predict
from p2m.infer.refine import extremity_regions
from p2m.infer.view import fit_weak_perspective

pytestmark = pytest.mark.body

TOPOLOGY = "notoes_collapse3pc"  # the 369-vertex anny mesh
TINY_SETS = (
    f"model.body.topology={TOPOLOGY}",
    "model.posenet.hidden=64",
    "model.meshnet.joint_channels=[8,8]",
    "model.meshnet.level_channels=[[16,16],[16,16],[16,16]]",
    "model.meshnet.head_channels=[8]",
    "train.batch_size=16",
    "train.epochs=1",
    "train.num_workers=0",
    "train.shuffle_buffer=16",
    "train.val_batch_size=32",
)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny synthetic dataset (subject 1: 32 people to train on, subject 2: 16 to validate and infer on)."""
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    try:
        from p2m.annotate.synth import SynthOptions, synth
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"p2m synth unavailable: {exc}")
    base = tmp_path_factory.mktemp("infer-data")
    try:
        synth(
            base / "ds",
            SynthOptions(num=48, poses="sampler", subjects=3, topology=TOPOLOGY, seed=11),
            progress=False,
        )
    except BodyModelError as exc:  # pragma: no cover - no anny cache
        pytest.skip(f"anny body model unavailable: {exc}")
    anns = json.loads((base / "ds" / "annotations" / "synth_subject3_data.json").read_text())["annotations"]
    return {"base": base, "ds": base / "ds", "anns": anns}


@pytest.fixture(scope="module")
def run(data: dict) -> Path:
    """A run trained for 2 steps by the trainer's train() (with a validation, so best.pt and best.safetensors exist)."""
    from p2m.pose2mesh.config import load_config
    from p2m.pose2mesh.train import train
    from p2m.shards import build_shards

    from .conftest import TINY_CONFIG

    shards = data["base"] / "shards"
    build_shards([data["ds"]], shards, splits={"train": "S1,S2", "test": "S3"}, maxcount=64, progress=False)
    out = data["base"] / "run"
    train(load_config(TINY_CONFIG, TINY_SETS), out, shards, device="cpu", progress=False)
    assert (out / "checkpoints" / "best.pt").is_file() and (out / "best.safetensors").is_file()
    return out


@pytest.fixture(scope="module")
def predictor(run: Path):
    return load_predictor(run)


def _coco(ann: dict) -> np.ndarray:
    return np.asarray(ann["keypoints"], dtype=np.float64).reshape(17, 3)


def _h36m(ann: dict) -> np.ndarray:
    return np.asarray(ann["joints_2d_h36m"], dtype=np.float64)


# ------------------------------------------------------------------------------------------------ outputs


def test_h36m_npy_on_a_run_folder_writes_mesh_joints_and_picture(run, data, tmp_path):
    import trimesh

    from p2m.body import create

    np.save(tmp_path / "pose.npy", _h36m(data["anns"][0])[:, :2])  # (17, 2): every joint visible
    res = infer(run, tmp_path / "pose.npy", tmp_path / "out")
    assert res.input.joint_set == "h36m" and res.prediction.known.all()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "mesh.obj",
        "mesh.ply",
        "joints3d.json",
        "mesh.png",
        "refine.png",
        "infer.json",
    }
    body = create("anny", topology=TOPOLOGY)
    nv, nf = int(body.num_vertices), int(body.faces.shape[0])
    assert res.prediction.vertices.shape == (nv, 3)
    for name in ("mesh.obj", "mesh.ply"):
        mesh = trimesh.load(tmp_path / "out" / name, process=False)
        assert (len(mesh.vertices), len(mesh.faces)) == (nv, nf), name
        # metres, vertex order kept, y up: the camera frame turned 180 degrees about x
        assert np.allclose(mesh.vertices, res.prediction.vertices / 1000 * [1, -1, -1], atol=1e-5), name
        assert np.array_equal(mesh.faces, body.faces.numpy()), name
    joints = json.loads((tmp_path / "out" / "joints3d.json").read_text())
    assert joints["names"] == list(J.H36M_JOINTS) and joints["unit"] == "mm"
    j = np.asarray(joints["joints"])
    assert j.shape == (17, 3) and np.allclose(j[0], 0, atol=1e-3)  # root-relative at the Pelvis
    assert np.allclose(j, res.prediction.joints3d, atol=1e-3)
    assert np.asarray(joints["joints_lifted"]).shape == (17, 3)
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert record["camera"]["scale_px_per_mm"] == pytest.approx(res.camera.scale)
    with Image.open(tmp_path / "out" / "mesh.png") as im:
        assert im.size == res.figure_size and im.mode == "RGB"
    # no photo: a blank canvas 640 px tall, three panels side by side under a caption strip
    assert res.panels["mesh"][3] == 640 and res.figure_size[0] == sum(p[2] for p in res.panels.values()) + 8


def _mesh_drawn_where_it_projects(res, faces: np.ndarray, fig: np.ndarray, background: np.ndarray) -> None:
    """The mesh panel differs from ``background`` at the projected vertices, and nowhere outside the projected
    triangles' boxes; positions map from photo pixels by the documented view ``scale * (p - origin + 0.5) - 0.5``."""
    x0, y0, w, h = res.panels["mesh"]
    panel = fig[y0 : y0 + h, x0 : x0 + w].astype(int)
    (sx, sy), (ox, oy) = res.view["scale"], res.view["origin"]
    uv = res.camera.project(res.prediction.vertices)
    uv = np.stack([sx * (uv[:, 0] - ox + 0.5) - 0.5, sy * (uv[:, 1] - oy + 0.5) - 0.5], axis=1)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] <= w - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= h - 1)
    assert inside.mean() > 0.8
    px = np.rint(uv[inside]).astype(int)
    changed = np.abs(panel - background.astype(int)).sum(axis=2) > 6
    assert changed[px[:, 1], px[:, 0]].mean() > 0.9
    near = np.zeros((h, w), bool)  # the projected triangles' bounding boxes (+1 px)
    for tri in uv[faces]:
        (xa, ya), (xb, yb) = (
            np.floor(tri.min(axis=0)).astype(int) - 1,
            np.ceil(tri.max(axis=0)).astype(int) + 2,
        )
        near[max(ya, 0) : max(yb, 0), max(xa, 0) : max(xb, 0)] = True
    assert changed.any() and not changed[~near].any()


def _place(joints: np.ndarray, height: float, centre: tuple[float, float]) -> np.ndarray:
    """The joints scaled to ``height`` px (their larger extent) about ``centre``."""
    kp = joints.copy()
    lo, hi = kp[:, :2].min(axis=0), kp[:, :2].max(axis=0)
    kp[:, :2] = (kp[:, :2] - (lo + hi) / 2) * (height / (hi - lo).max()) + centre
    return kp


def test_the_camera_is_the_least_squares_fit_and_the_mesh_is_drawn_where_it_projects(
    predictor, data, tmp_path
):
    from p2m.render import procedural_background

    photo = procedural_background(600, 500, np.random.default_rng(3))  # shown 1:1 (480 to 720 px tall)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    kp = _place(_h36m(data["anns"][1]), 380, (300, 250))
    (tmp_path / "pose.json").write_text(json.dumps(kp.tolist()))
    res = infer(predictor, tmp_path / "pose.json", tmp_path / "out", image=tmp_path / "photo.png")
    # the camera: the closed-form least squares of u = s x + tx, v = s y + ty over the 17 joints
    X, p = res.prediction.joints3d[:, :2], kp[:, :2]
    A = np.zeros((34, 3))
    A[0::2, 0], A[1::2, 0], A[0::2, 1], A[1::2, 2] = X[:, 0], X[:, 1], 1, 1
    s, tx, ty = np.linalg.lstsq(A, p.reshape(-1), rcond=None)[0]
    assert (res.camera.scale, res.camera.tx, res.camera.ty) == pytest.approx((s, tx, ty), rel=1e-6, abs=1e-6)
    rms = np.sqrt(np.mean(np.sum((A @ [s, tx, ty] - p.reshape(-1)).reshape(17, 2) ** 2, axis=1)))
    assert res.camera.rms_px == pytest.approx(rms, rel=1e-6)
    # the picture: the photo at 1:1 in the mesh panel, changed where the mesh projects and nowhere else
    fig = np.asarray(Image.open(tmp_path / "out" / "mesh.png"))
    assert res.panels["mesh"][2:] == (600, 500) and res.view == {"scale": (1.0, 1.0), "origin": (0.0, 0.0)}
    _mesh_drawn_where_it_projects(res, predictor.faces, fig, photo)
    # the input panel: the joints drawn as red dots on the photo
    x0, y0 = res.panels["input"][:2]
    dots = fig[np.rint(kp[:, 1]).astype(int) + y0, np.rint(kp[:, 0]).astype(int) + x0].astype(int)
    assert (np.abs(dots - [255, 60, 60]).sum(axis=1) < 30).mean() > 0.7  # most dots visible (some overlap)


def test_a_small_person_is_shown_cropped_and_enlarged(predictor, data, tmp_path):

    Image.fromarray(np.full((1000, 1400, 3), 30, np.uint8)).save(tmp_path / "photo.png")
    kp = _place(_h36m(data["anns"][1]), 150, (1000, 300))  # 150 px tall in a 1000 px photo
    (tmp_path / "pose.json").write_text(json.dumps(kp.tolist()))
    res = infer(predictor, tmp_path / "pose.json", tmp_path / "out", image=tmp_path / "photo.png")
    (sx, sy), (ox, oy) = res.view["scale"], res.view["origin"]
    assert (
        ox > 700 and oy > 50 and sx == pytest.approx(sy, rel=0.01) and sx > 1 and res.panels["mesh"][3] == 480
    )
    fig = np.asarray(Image.open(tmp_path / "out" / "mesh.png"))
    _mesh_drawn_where_it_projects(res, predictor.faces, fig, np.full((1, 1, 3), 30))
    full = infer(
        predictor, tmp_path / "pose.json", tmp_path / "full", image=tmp_path / "photo.png", crop=False
    )
    assert full.view["origin"] == (0.0, 0.0) and full.panels["mesh"][2:] == (1008, 720)


def test_ground_truth_3d_joints_fit_their_2d_through_the_weak_perspective_camera(data):
    """The camera convention (x right, y down, root-relative camera mm) is the dataset's: true 3D joints fit
    their projections to ~1 % of the person's height (the rest is perspective); flipping y does not fit."""
    ann_dir = data["ds"] / "annotations"
    d = json.loads((ann_dir / "synth_subject3_data.json").read_text())
    cams = json.loads((ann_dir / "synth_subject3_camera.json").read_text())
    j3d = json.loads((ann_dir / "synth_subject3_joint_3d.json").read_text())
    images = {im["id"]: im for im in d["images"]}
    rel, flipped = [], []
    for ann in d["annotations"]:
        im = images[ann["image_id"]]
        cam = cams[str(im["cam_idx"])]
        world = np.asarray(j3d[str(im["action_idx"])][str(im["subaction_idx"])][str(im["frame_idx"])])
        xc = world @ np.asarray(cam["R"]).T + np.asarray(cam["t"])
        xc -= xc[0]
        p = _h36m(ann)[:, :2]
        rel.append(fit_weak_perspective(xc, p).rms_px / np.ptp(p[:, 1]))
        flipped.append(fit_weak_perspective(xc * [1, -1, 1], p).rms_px / np.ptp(p[:, 1]))
    assert np.mean(rel) < 0.03 and np.mean(flipped) > 0.15


def test_coco_and_h36m_inputs_of_one_person_agree(predictor, data, tmp_path):

    ann = data["anns"][2]
    (tmp_path / "coco.json").write_text(json.dumps(_coco(ann).reshape(-1).tolist()))  # 51 numbers, COCO order
    (tmp_path / "h36m.json").write_text(json.dumps(_h36m(ann).tolist()))
    coco = infer(predictor, tmp_path / "coco.json", tmp_path / "a")
    h36m = infer(predictor, tmp_path / "h36m.json", tmp_path / "b")
    assert (coco.input.joint_set, h36m.input.joint_set) == ("coco", "h36m")  # recognised from the layout
    assert coco.prediction.known.all() and "Head from the ears+nose rule" in coco.notes
    # every H36M joint but the Head is determined by COCO: copied, or (Pelvis, Torso, Neck) means of two or four
    # joints, which differ from the projected 3D means by the perspective only
    copied = [1, 2, 3, 4, 5, 6, 9, 11, 12, 13, 14, 15, 16]
    assert np.allclose(coco.prediction.joints2d[copied], _h36m(ann)[copied, :2], atol=0.02)
    assert np.allclose(coco.prediction.joints2d[[0, 7, 8]], _h36m(ann)[[0, 7, 8], :2], atol=3.0)
    head_err = np.linalg.norm(coco.prediction.joints2d[10] - _h36m(ann)[10, :2])
    torso = np.linalg.norm(_h36m(ann)[8, :2] - _h36m(ann)[0, :2])
    assert head_err < 0.25 * torso
    forced = infer(predictor, tmp_path / "h36m.json", tmp_path / "c", joint_set="h36m")
    assert np.allclose(forced.prediction.vertices, h36m.prediction.vertices)


def test_head_rule_on_synthetic_people(data):
    errs = []
    for ann in data["anns"]:
        head, rule = head_top_from_coco(_coco(ann))
        gt = _h36m(ann)
        assert rule == "ears+nose"
        errs.append(np.linalg.norm(head - gt[10, :2]) / np.linalg.norm(gt[8, :2] - gt[0, :2]))
    assert np.mean(errs) < 0.1  # 5.6 % of the torso on 2,000 held-out CMU poses (benchmarks/bench_infer.py)
    kp = _coco(data["anns"][0])
    kp[0, 2] = 0  # no nose: the ears-only rule
    assert head_top_from_coco(kp)[1] == "ears"
    kp[3, 2] = 0  # one ear missing too: Head stays missing
    assert head_top_from_coco(kp) == (None, None)


def test_a_detect_data_json_with_off_image_legs_finds_its_photo_and_camera(predictor, data, tmp_path):
    from p2m.annotate.detect import person_annotation
    from p2m.camera import Camera
    from p2m.layout import DatasetWriter

    ds = tmp_path / "photos"
    (ds / "images").mkdir(parents=True)
    w, h = 640, 420  # the synthetic frames are 1000 x 1000: cropping at y = 420 puts the lower legs outside
    with DatasetWriter(ds, "photos") as writer:
        for k, ann in enumerate(data["anns"][3:5]):
            lm = np.zeros((J.MEDIAPIPE_NUM_LANDMARKS, 3))
            kp = _coco(ann)
            lm[:, :2] = kp[:, :2].mean(axis=0)
            # shifted so that the ankles fall 60 px below the photo (whatever the synthetic person's size)
            lm[list(J.MEDIAPIPE_TO_COCO), :2] = kp[:, :2] - [
                kp[:, 0].mean() - w / 2,
                kp[:, 1].max() - (h + 60),
            ]
            lm[:, 2] = 0.95
            record, _, _ = person_annotation(lm, w, h)  # exactly what `p2m annotate detect` writes
            Image.fromarray(np.full((h, w, 3), 90 + 40 * k, np.uint8)).save(ds / "images" / f"p{k}.png")
            cam = Camera(R=np.eye(3), t=np.zeros(3), f=[800.0, 800.0], c=[320.0, 210.0])
            writer.add_camera(1, k + 1, cam)
            writer.add_frame(
                1,
                {
                    "file_name": f"p{k}.png",
                    "width": w,
                    "height": h,
                    "action_idx": 1,
                    "subaction_idx": 1,
                    "cam_idx": k + 1,
                    "frame_idx": k,
                },
                [record],
            )
    data_json = ds / "annotations" / "photos_subject1_data.json"
    ids = [a["id"] for a in json.loads(data_json.read_text())["annotations"]]
    res = infer(
        predictor, data_json, tmp_path / "out", person=1, crop=False
    )  # the whole photo in the picture
    assert res.input.joint_set == "coco" and res.input.annotation_id == ids[1]
    assert res.input.image_path == ds / "images" / "p1.png"  # the photo the data.json names
    assert res.panels["mesh"][2:] == (731, 480)  # a photo under 480 px tall is enlarged to 480
    kp = _coco(json.loads(data_json.read_text())["annotations"][1])
    off = kp[:, 2] == 0
    assert off.any(), "the test needs off-image keypoints"
    xy, known, _ = to_model_joints(res.input, "h36m")
    filled = ~res.prediction.known
    assert (
        np.array_equal(known, res.prediction.known)
        and filled.any()
        and np.isfinite(res.prediction.joints2d).all()
    )
    assert np.array_equal(res.prediction.joints2d[known], xy[known])  # known joints kept as given
    assert res.root_translation_mm is not None and res.root_translation_mm[2] > 0
    # the root that makes the predicted joints project onto the known input joints through that camera (least
    # squares on the perspective projection, p2m.pose2mesh.metrics.root_from_projection)
    from p2m.pose2mesh.metrics import root_from_projection

    rel = res.prediction.joints3d - res.prediction.joints3d[0]
    expected = root_from_projection(
        res.prediction.joints2d[None],
        rel[None],
        np.array([[800.0, 800.0, 320.0, 210.0]]),
        known[None].astype(float),
    )[0]
    if expected[2] > 0:
        assert np.allclose(res.root_translation_mm, expected, rtol=1e-6, atol=1e-6)
    else:  # no pinhole explains this (barely trained) prediction: the weak-perspective depth instead
        weak = res.camera.root_translation_mm((800.0, 800.0), (320.0, 210.0))
        assert np.allclose(res.root_translation_mm, weak, rtol=1e-6, atol=1e-6)
    joints = json.loads((tmp_path / "out" / "joints3d.json").read_text())
    assert np.allclose(
        joints["joints_camera_frame"], res.prediction.joints3d + res.root_translation_mm, atol=0.06
    )
    by_id = infer(predictor, data_json, tmp_path / "out2", annotation_id=ids[1])
    assert np.allclose(by_id.prediction.vertices, res.prediction.vertices)
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert record["input"]["filled_in"] == [n for n, f in zip(J.H36M_JOINTS, filled, strict=True) if f]


def test_known_joints_stay_and_too_few_are_refused(predictor, data):
    xy = _h36m(data["anns"][5])[:, :2].copy()
    known = np.ones(17, bool)
    known[[2, 3, 13]] = False
    xy[~known] = np.nan
    out = predict(predictor, xy, known)
    assert np.array_equal(out.joints2d[known], xy[known]) and np.isfinite(out.joints2d).all()
    assert out.camera.joints_used == 14
    few = np.zeros(17, bool)
    few[:5] = True
    with pytest.raises(P2MError, match=r"pose\.json: only 5 of 17 joints are labelled"):
        predict(predictor, _h36m(data["anns"][5])[:, :2], few, where="pose.json")


# ------------------------------------------------------------------------------------------------ checkpoint forms


def test_every_checkpoint_form_gives_the_same_mesh(run, predictor, data, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from p2m.pose2mesh.config import load_config, to_dict

    xy = _h36m(data["anns"][6])[:, :2]
    ref = predict(predictor, xy, np.ones(17, bool)).vertices
    state = load_file(str(run / "best.safetensors"))
    plain = tmp_path / "plain" / "model.pt"
    plain.parent.mkdir()
    torch.save(
        {"config": to_dict(load_config(run / "config.yaml")), "state_dict": state}, plain
    )  # model.py's form
    bare = (
        tmp_path / "bare" / "weights.safetensors"
    )  # weights without metadata + the run's config.yaml beside
    bare.parent.mkdir()
    save_file(state, str(bare))
    (bare.parent / "config.yaml").write_text((run / "config.yaml").read_text())
    for form in (
        run / "checkpoints" / "last.pt",
        run / "checkpoints" / "best.pt",
        run / "best.safetensors",
        plain,
        bare,
    ):
        got = predict(load_predictor(form), xy, np.ones(17, bool)).vertices
        assert np.allclose(got, ref, atol=1e-4), form


def test_a_posenet_checkpoint_gives_joints_and_a_picture_without_mesh_files(data, tmp_path):
    import torch

    from p2m.pose2mesh.config import load_config, to_dict
    from p2m.pose2mesh.model import build_model

    from .conftest import REPO

    cfg = load_config(REPO / "configs" / "tiny_posenet.yaml")
    torch.save({"config": to_dict(cfg), "state_dict": build_model(cfg).state_dict()}, tmp_path / "posenet.pt")
    (tmp_path / "pose.json").write_text(
        json.dumps({"keypoints": _coco(data["anns"][8]).reshape(-1).tolist()})
    )
    res = infer(tmp_path / "posenet.pt", tmp_path / "pose.json", tmp_path / "out")
    assert set(res.files) == {"joints", "png", "json"} and res.prediction.vertices is None
    joints = json.loads(res.files["joints"].read_text())
    assert joints["source"] == "posenet" and np.asarray(joints["joints"]).shape == (17, 3)
    assert "no mesh" in res.summary()


def test_unusable_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="nothing-here"):
        load_state(tmp_path / "nothing-here")
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"broken\.pt: cannot read the checkpoint"):
        load_state(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty"):
        load_state(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_pose_files_are_named_with_the_field(predictor, data, tmp_path):
    np.save(tmp_path / "short.npy", np.zeros((16, 2)))
    with pytest.raises(P2MError, match=r"short\.npy: the array has shape \(16, 2\), expected \(17, 2\)"):
        read_pose2d(tmp_path / "short.npy")
    with pytest.raises(P2MError, match=r"missing\.json: no such 2D pose file"):
        read_pose2d(tmp_path / "missing.json")
    (tmp_path / "pose.json").write_text(json.dumps(_h36m(data["anns"][0]).tolist()))
    with pytest.raises(P2MError, match=r"joint set 'mpii': expected one of \['auto', 'coco', 'h36m'\]"):
        read_pose2d(tmp_path / "pose.json", joint_set="mpii")
    (tmp_path / "ann.json").write_text(json.dumps({"id": 4, "keypoints": [1.0] * 50}))
    with pytest.raises(P2MError, match=r"ann\.json: field 'keypoints' has shape \(50,\)"):
        read_pose2d(tmp_path / "ann.json")
    (tmp_path / "other.json").write_text(json.dumps({"bbox": [0, 0, 1, 1]}))
    with pytest.raises(P2MError, match=r"other\.json: no 2D joints; expected a field 'keypoints'"):
        read_pose2d(tmp_path / "other.json")
    (tmp_path / "text.txt").write_text("1 2 3")
    with pytest.raises(P2MError, match=r"text\.txt: unknown file type"):
        read_pose2d(tmp_path / "text.txt")
    np.save(tmp_path / "people.npy", np.stack([_h36m(a) for a in data["anns"][:3]]))
    assert np.array_equal(read_pose2d(tmp_path / "people.npy", person=2).joints, _h36m(data["anns"][2]))
    with pytest.raises(P2MError, match=r"people\.npy: --person 3 is out of range; the file holds 3 people"):
        read_pose2d(tmp_path / "people.npy", person=3)
    blob = np.zeros((17, 3))
    blob[:, :2] = np.random.default_rng(0).uniform(0, 10, (17, 2))
    blob[:, 2] = 1
    np.save(tmp_path / "blob.npy", blob)  # neither layout: the user must say which
    with pytest.raises(P2MError, match=r"blob\.npy: cannot tell whether .* pass --joint-set"):
        read_pose2d(tmp_path / "blob.npy")
    assert read_pose2d(tmp_path / "blob.npy", joint_set="coco").joint_set == "coco"


def test_cli_prints_camera_and_summary_and_fails_cleanly(run, data, tmp_path):
    from p2m.cli import main

    (tmp_path / "pose.json").write_text(json.dumps(_coco(data["anns"][7]).tolist()))
    runner = CliRunner()
    res = runner.invoke(
        main,
        [
            "infer",
            str(run / "best.safetensors"),
            "--pose2d",
            str(tmp_path / "pose.json"),
            "--out",
            str(tmp_path / "out"),
            "--mesh-axes",
            "camera",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "camera: {" in res.output and "scale_px_per_mm" in res.output and "-vertex mesh" in res.output
    assert (tmp_path / "out" / "mesh.png").is_file()
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert record["mesh_axes"].startswith("camera") and record["input"]["joint_set"] == "coco"
    bad = runner.invoke(
        main, ["infer", str(run), "--pose2d", str(tmp_path / "nope.npy"), "--out", str(tmp_path / "x")]
    )
    assert bad.exit_code == 1 and "nope.npy: no such 2D pose file" in bad.output
    bad = runner.invoke(
        main,
        [
            "infer",
            str(run),
            "--pose2d",
            str(tmp_path / "pose.json"),
            "--out",
            str(tmp_path / "x"),
            "--joint-set",
            "mpii",
        ],
    )
    assert bad.exit_code == 2 and "mpii" in bad.output


# ------------------------------------------------------------------------------------------------ refine, glb, texture


def _obj_vertices(path: Path) -> np.ndarray:
    return np.array(
        [[float(x) for x in ln.split()[1:4]] for ln in path.read_text().splitlines() if ln.startswith("v ")]
    )


def test_refine_is_on_by_default_and_no_refine_keeps_the_network_mesh(predictor, data, tmp_path):
    kp = _h36m(data["anns"][2])
    (tmp_path / "pose.json").write_text(json.dumps(kp.tolist()))
    net = predict(predictor, kp[:, :2], kp[:, 2] > 0).vertices  # the network's own mesh
    on = infer(predictor, tmp_path / "pose.json", tmp_path / "on")
    assert (tmp_path / "on" / "refine.png").is_file() and on.files["refine_png"].name == "refine.png"
    record = json.loads((tmp_path / "on" / "infer.json").read_text())
    assert record["refine"]["method"] == "fit" and record["refine"]["fit_rms_mm"] > 0
    assert record["files"]["refine_png"] == "refine.png"
    with Image.open(
        tmp_path / "on" / "refine.png"
    ) as im:  # caption row + one row per extremity, before | after
        assert im.size == (2 * 200, 18 + 200 * len(extremity_regions(predictor.body)))
    weight = sum(e.weight for e in extremity_regions(predictor.body).values())
    moved = np.linalg.norm(on.prediction.vertices - net, axis=1)
    assert np.array_equal(
        on.prediction.vertices[weight == 0], net[weight == 0]
    )  # the body is left as predicted
    assert moved[weight > 0.99].mean() > 1.0  # the hands and feet took the body model's geometry (mm)
    assert np.allclose(
        _obj_vertices(tmp_path / "on" / "mesh.obj"), mesh_file_vertices(on.prediction.vertices), atol=2e-6
    )
    off = infer(predictor, tmp_path / "pose.json", tmp_path / "off", refine=False)
    assert not (tmp_path / "off" / "refine.png").exists() and "refine_png" not in off.files
    assert json.loads((tmp_path / "off" / "infer.json").read_text())["refine"] is None
    assert np.array_equal(off.prediction.vertices, net) and not np.allclose(
        off.prediction.vertices, on.prediction.vertices
    )
    paste = infer(predictor, tmp_path / "pose.json", tmp_path / "paste", refine_method="paste")
    assert json.loads((tmp_path / "paste" / "infer.json").read_text())["refine"]["method"] == "paste"
    assert not np.allclose(paste.prediction.vertices, on.prediction.vertices)


def test_format_glb_writes_a_rigged_gltf_with_the_h36m_skeleton(predictor, data, tmp_path):
    import pygltflib
    import trimesh

    (tmp_path / "pose.json").write_text(json.dumps(_coco(data["anns"][5]).tolist()))
    res = infer(predictor, tmp_path / "pose.json", tmp_path / "out", formats=("glb",), refine_method="paste")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "mesh.glb",
        "joints3d.json",
        "mesh.png",
        "refine.png",
        "infer.json",
    }
    gltf = pygltflib.GLTF2().load(str(tmp_path / "out" / "mesh.glb"))
    assert len(gltf.skins) == 1 and len(gltf.skins[0].joints) == 17
    assert {gltf.nodes[j].name for j in gltf.skins[0].joints} == set(J.H36M_JOINTS)
    mesh = trimesh.load(tmp_path / "out" / "mesh.glb", force="mesh", process=False)
    nv = len(res.prediction.vertices)
    assert len(mesh.vertices) == nv and len(mesh.faces) == len(predictor.faces)
    # metres, y up: the refined mesh, as in the obj / ply files
    assert np.allclose(mesh.vertices, mesh_file_vertices(res.prediction.vertices), atol=1e-5)
    assert json.loads((tmp_path / "out" / "infer.json").read_text())["files"]["glb"] == "mesh.glb"


def test_texture_from_the_photo_writes_a_textured_obj_and_needs_a_photo(predictor, data, tmp_path):
    from p2m.render import procedural_background

    photo = procedural_background(600, 500, np.random.default_rng(5))
    Image.fromarray(photo).save(tmp_path / "photo.png")
    kp = _place(_h36m(data["anns"][1]), 380, (300, 250))
    (tmp_path / "pose.json").write_text(json.dumps(kp.tolist()))
    res = infer(
        predictor,
        tmp_path / "pose.json",
        tmp_path / "out",
        image=tmp_path / "photo.png",
        texture=True,
        refine_method="paste",
    )
    out = tmp_path / "out"
    assert {"mesh.obj", "mesh.mtl", "mesh_texture.png", "mesh.ply", "mesh.png"} <= {
        p.name for p in out.iterdir()
    }
    assert res.files["obj"] == out / "mesh.obj" and res.files["texture"] == out / "mesh_texture.png"
    obj = (out / "mesh.obj").read_text()
    assert "mtllib mesh.mtl" in obj and "\nvt " in obj and "/" in obj.split("\nf ", 1)[1].split("\n", 1)[0]
    assert "map_Kd mesh_texture.png" in (out / "mesh.mtl").read_text()
    with Image.open(out / "mesh.png") as im:  # the picture is not overwritten by the texture
        assert im.size == res.figure_size
    tex = np.asarray(Image.open(out / "mesh_texture.png").convert("RGB")).reshape(-1, 3)
    assert len(np.unique(tex, axis=0)) > 50  # colours sampled from the photo, not one flat colour
    assert json.loads((out / "infer.json").read_text())["texture"]["image"] == str(tmp_path / "photo.png")
    with pytest.raises(ConfigError, match=r"--texture needs the photo .*--image"):
        infer(predictor, tmp_path / "pose.json", tmp_path / "none", texture=True)
    with pytest.raises(ConfigError, match=r"mesh formats \['stl'\]"):
        infer(predictor, tmp_path / "pose.json", tmp_path / "none", formats=("stl",))
    assert not (tmp_path / "none").exists()


def test_cli_format_refine_and_texture_options(run, data, tmp_path):
    from p2m.cli import main

    (tmp_path / "pose.json").write_text(json.dumps(_coco(data["anns"][7]).tolist()))
    base = ["infer", str(run), "--pose2d", str(tmp_path / "pose.json")]
    runner = CliRunner()
    res = runner.invoke(
        main, [*base, "--out", str(tmp_path / "a"), "--format", "ply,glb", "--format", "obj", "--no-refine"]
    )
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "a").iterdir()} == {
        "mesh.obj",
        "mesh.ply",
        "mesh.glb",
        "joints3d.json",
        "mesh.png",
        "infer.json",
    }
    assert "(glb)" in res.output
    bad = runner.invoke(main, [*base, "--out", str(tmp_path / "b"), "--texture"])
    assert bad.exit_code == 1 and "--texture needs the photo" in bad.output and "--image" in bad.output
    bad = runner.invoke(main, [*base, "--out", str(tmp_path / "b"), "--format", "obj,stl"])
    assert bad.exit_code == 2 and "stl" in bad.output


def test_mesh_full_is_the_refine_fit_on_the_full_anny_mesh_with_makehuman_uvs(predictor, data, tmp_path):
    import trimesh

    from p2m.export import body_uv_layout, rasterize_uv
    from p2m.render import procedural_background

    photo = procedural_background(600, 500, np.random.default_rng(5))
    Image.fromarray(photo).save(tmp_path / "photo.png")
    (tmp_path / "pose.json").write_text(json.dumps(_place(_h36m(data["anns"][1]), 380, (300, 250)).tolist()))
    net = infer(predictor, tmp_path / "pose.json", tmp_path / "net")
    res = infer(
        predictor,
        tmp_path / "pose.json",
        tmp_path / "out",
        image=tmp_path / "photo.png",
        texture=True,
        formats=("obj", "glb"),
        mesh="full",
    )
    out = tmp_path / "out"
    assert res.prediction.vertices.shape == (13718, 3) and net.prediction.vertices.shape[0] == 369
    record = json.loads((out / "infer.json").read_text())
    assert record["mesh"] == {"kind": "full", "vertices": 13718} and record["refine"]["method"] == "fit"
    # The full mesh is where the network's refined mesh is: same joints to within the fit's error.
    gap = np.linalg.norm(res.prediction.vertices.mean(0) - net.prediction.vertices.mean(0))
    assert gap < 0.1 * np.ptp(net.prediction.vertices[:, 1])
    obj = (out / "mesh.obj").read_text()
    assert obj.count("\nv ") == 13718
    # MakeHuman's UV layout: the texture's islands are anny's own, not a per-triangle atlas.
    from p2m.body import create

    layout = body_uv_layout(create("anny", topology="full"), 1024)
    assert layout.kind == "anny" and obj.count("\nvt ") == len(layout.uv)
    covered = rasterize_uv(layout, 1024)[0] >= 0
    assert 0.55 < covered.mean() < 0.7  # 62.6 % of the square, as MakeHuman lays it out
    scene = trimesh.load(out / "mesh.glb", force="scene")
    (geom,) = scene.geometry.values()
    assert len(geom.vertices) >= 13718 and geom.visual.uv is not None
    with pytest.raises(ConfigError, match=r"--mesh full needs the refine fit"):
        infer(predictor, tmp_path / "pose.json", tmp_path / "x", mesh="full", refine_method="paste")


def test_cli_reads_an_openpose_json_and_picks_the_person(run, data, tmp_path):
    from p2m.cli import main
    from p2m.pose_formats import BODY25_TO_COCO

    people = []
    for ann in data["anns"][:3]:
        body = np.zeros((25, 3))
        kp = _coco(ann)
        body[list(BODY25_TO_COCO)] = np.where(kp[:, 2:] > 0, np.c_[kp[:, :2], np.full(17, 0.8)], 0.0)
        people.append({"person_id": [-1], "pose_keypoints_2d": body.reshape(-1).tolist()})
    (tmp_path / "photo_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    res = CliRunner().invoke(
        main,
        [
            "infer",
            str(run),
            "--pose2d",
            str(tmp_path / "photo_keypoints.json"),
            "--person",
            "2",
            "--out",
            str(tmp_path / "out"),
            "--no-refine",
        ],
    )
    assert res.exit_code == 0, res.output
    record = json.loads((tmp_path / "out" / "infer.json").read_text())
    assert record["input"]["person"] == 2 and "openpose JSON" in record["input"]["notes"]
    assert record["input"]["joint_set"] == "coco"
