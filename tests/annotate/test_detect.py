"""Tests for `p2m annotate detect`: MediaPipe keypoints on real photos and renders, as a valid dataset."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from p2m.annotate import validate
from p2m.annotate.detect import (
    LABELLED_SCORE,
    VISIBLE_SCORE,
    MediaPipePose,
    detect,
    landmarks_to_coco,
    person_annotation,
)
from p2m.annotate.photo import default_focal, focal_from_35mm, place_image, read_photo, single_photo_camera
from p2m.cli import main
from p2m.errors import P2MError
from p2m.joints import coco_to_h36m
from p2m.layout import read_dataset, subject_file

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "external-fixtures"
PEOPLE = SHARED / "public-domain-people-images"
COCO = SHARED / "mmpose-coco"
os.environ.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))


def _exif(focal_35mm: float | None = None, orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    if focal_35mm is not None:
        exif.get_ifd(0x8769)[0xA405] = focal_35mm
    return exif


def _gradient(path: Path, focal_35mm: float | None = None) -> None:
    a = np.zeros((240, 320, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, 320)[None]
    a[..., 2] = np.linspace(0, 255, 240)[:, None]
    Image.fromarray(a).save(path, exif=_exif(focal_35mm))


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------------------------------------ pure parts
def test_landmarks_to_coco_visibility_thresholds_and_image_border() -> None:
    lm = np.zeros((33, 3))
    lm[:, 0], lm[:, 1], lm[:, 2] = 50.0, 40.0, 0.9
    lm[0, 2] = VISIBLE_SCORE  # nose: exactly at the visible threshold -> 2
    lm[2, 2] = (VISIBLE_SCORE + LABELLED_SCORE) / 2  # left eye (mediapipe 2) -> 1
    lm[5, 2] = LABELLED_SCORE - 0.01  # right eye (mediapipe 5) -> 0
    lm[27, :2] = (120.0, 40.0)  # left ankle (mediapipe 27): x past the right border of a 100 px image -> 0
    lm[28, :2] = (50.0, -0.6)  # right ankle: above the top border -> 0
    lm[11, :2] = (99.4, 79.4)  # left shoulder: inside (pixel centres on integers, border at W - 0.5)
    kp, scores = landmarks_to_coco(lm, width=100, height=80)
    assert kp.shape == (17, 3) and scores.shape == (17,)
    assert kp[:, 2].tolist() == [2, 1, 0, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0]
    assert (kp[kp[:, 2] == 0, :2] == 0).all()  # COCO files carry x = y = 0 for v = 0
    assert kp[5, :2].tolist() == [99.4, 79.4]
    np.testing.assert_allclose(scores[15], 0.9)  # the raw confidence is kept even where v = 0
    ann, score, n = person_annotation(lm, 100, 80)
    assert n == 14 and math.isclose(score, scores.mean(), abs_tol=1e-4)
    x, y, w, h = ann["bbox"]
    assert x >= 0 and y >= 0 and x + w <= 100 and y + h <= 80  # clipped to the image
    np.testing.assert_allclose(ann["joints_2d_h36m"], np.round(coco_to_h36m(kp), 2))
    with pytest.raises(ValueError, match=r"\(33, 3\)"):
        landmarks_to_coco(np.zeros((17, 3)), 10, 10)


def test_single_photo_camera_focal_from_exif_or_the_diagonal(tmp_path: Path) -> None:
    cam, source = single_photo_camera(640, 480)
    assert source == "default_diagonal" and cam.f.tolist() == [800.0, 800.0] == [default_focal(640, 480)] * 2
    assert cam.c.tolist() == [319.5, 239.5] and (cam.R == np.eye(3)).all() and (cam.t == 0).all()
    cam, source = single_photo_camera(640, 480, focal_35mm=43.266615305567875)  # the full-frame diagonal
    assert source == "exif_35mm" and np.allclose(cam.f, 800.0)
    # A 3:2 image: the 35 mm equivalent maps the long side to 36 mm exactly.
    assert math.isclose(focal_from_35mm(36.0, 3000, 2000), 3000.0)
    _gradient(tmp_path / "g.jpg", focal_35mm=28)
    photo = read_photo(tmp_path / "g.jpg")
    assert photo.focal_35mm == 28.0 and (photo.width, photo.height) == (320, 240) and not photo.rotated


def test_exif_orientation_is_applied_and_stored_upright(tmp_path: Path) -> None:
    upright = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(np.rot90(upright, 1).copy()).save(tmp_path / "r.png", exif=_exif(orientation=6))
    photo = read_photo(tmp_path / "r.png")
    assert photo.rotated and (photo.width, photo.height) == (30, 20) and (photo.rgb == upright).all()
    rel = place_image(tmp_path / "r.png", tmp_path / "images", "r.png", photo)
    assert (np.asarray(Image.open(tmp_path / "images" / rel)) == upright).all()
    # Another file under the same name is never overwritten: it goes beside it.
    (tmp_path / "other.png").write_bytes((tmp_path / "r.png").read_bytes() + b"x")
    rel2 = place_image(tmp_path / "other.png", tmp_path / "images", "r.png")
    assert rel2 != rel and rel2.startswith("r-") and (tmp_path / "images" / rel).read_bytes() != b""


def test_missing_mediapipe_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes `import mediapipe` raise ImportError
    with pytest.raises(P2MError, match=r"pip install 'p2m\[detect\]'"):
        MediaPipePose()


# ------------------------------------------------------------------------------------------------ real photos
@pytest.fixture(scope="module")
def detected(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """detect() over the public-domain photos, the 4 COCO photos (in a subfolder), a gradient, a corrupt file."""
    if not (PEOPLE.is_dir() and COCO.is_dir()):
        pytest.skip(f"shared photo fixtures absent under {SHARED}")
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    src = tmp_path_factory.mktemp("src")
    for p in PEOPLE.glob("*.png"):
        shutil.copy(p, src / p.name)
    (src / "coco").mkdir()
    for p in COCO.glob("*.jpg"):
        shutil.copy(p, src / "coco" / p.name)
    _gradient(src / "gradient.jpg", focal_35mm=50)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    out = tmp_path_factory.mktemp("ds")
    stats = detect(src, out, name="photos", batch=3, progress=False, max_people=1)  # the single-person path
    return src, out, stats


def test_detect_records_every_image_and_passes_validate(detected: tuple[Path, Path, dict]) -> None:
    src, out, stats = detected
    assert stats["images/total"] == 8
    assert stats["images/person"] == 6 and stats["images/no_person"] == 1 and stats["images/unreadable"] == 1
    assert stats["no_person"] == ["gradient.jpg"]
    assert len(stats["unreadable"]) == 1 and "broken.jpg" in stats["unreadable"][0]
    assert stats["camera/exif_35mm"] == 1 and stats["camera/default_diagonal"] == 6
    report = validate(out)
    assert report.ok, [str(p) for p in report.problems]
    assert (
        report.counts["images"] == 7 and report.counts["annotations"] == 6 and report.counts["cameras"] == 7
    )
    info = json.loads((out / "annotations" / "photos_info.json").read_text())
    assert info["detect"]["no_person"] == ["gradient.jpg"] and "mediapipe" in info["detect"]["detector"]
    data = json.loads(subject_file(out, "photos", 1, "data").read_text())
    by_name = {img["file_name"]: img for img in data["images"]}
    assert set(by_name) == {"astronaut.png", "camera.png", "gradient.jpg"} | {
        f"coco/{p.name}" for p in COCO.glob("*.jpg")
    }
    assert (
        len({img["cam_idx"] for img in data["images"]})
        == 7
        == len({img["frame_idx"] for img in data["images"]})
    )
    gradient = by_name["gradient.jpg"]
    assert not [a for a in data["annotations"] if a["image_id"] == gradient["id"]]
    cams = json.loads(subject_file(out, "photos", 1, "camera").read_text())
    assert np.allclose(cams[str(gradient["cam_idx"])]["f"], focal_from_35mm(50, 320, 240))
    for rel in by_name:
        assert (out / "images" / rel).read_bytes() == (src / rel).read_bytes()
    # The astronaut's legs are below the picture: those keypoints are unlabelled, her face is visible.
    astro = next(a for a in data["annotations"] if a["image_id"] == by_name["astronaut.png"]["id"])
    kp = np.asarray(astro["keypoints"]).reshape(17, 3)
    assert kp[[13, 14, 15, 16], 2].tolist() == [0, 0, 0, 0] and (kp[:5, 2] == 2).all()
    assert astro["num_keypoints"] == int((kp[:, 2] > 0).sum()) and len(astro["keypoint_scores"]) == 17


def test_detect_rerun_skips_done_images_and_keeps_files(detected: tuple[Path, Path, dict]) -> None:
    src, out, _ = detected
    before = _tree_digest(out / "annotations")
    stats = detect(src, out, name="photos", progress=False, max_people=1)
    assert stats["images/already_done"] == 7 and stats.get("images/person", 0) == 0
    assert stats["images/unreadable"] == 1  # retried, still reported
    assert _tree_digest(out / "annotations") == before


def test_detect_into_a_dataset_inside_the_source_never_reads_its_own_output(tmp_path: Path) -> None:
    if not PEOPLE.is_dir():
        pytest.skip(f"shared photo fixtures absent: {PEOPLE}")
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    shutil.copy(PEOPLE / "camera.png", tmp_path / "camera.png")
    first = detect(tmp_path, tmp_path / "ds", progress=False)
    again = detect(tmp_path, tmp_path / "ds", progress=False)
    assert first["images/total"] == again["images/total"] == 1 and again["images/already_done"] == 1
    assert validate(tmp_path / "ds").ok


def _pck(found: np.ndarray, truth: np.ndarray, size: float) -> tuple[float, float, float, int]:
    both = (found[:, 2] > 0) & (truth[:, 2] > 0)
    err = np.linalg.norm(found[both, :2] - truth[both, :2], axis=1)
    return (
        float(err.mean()),
        float((err < 0.1 * size).mean()),
        float((err < 0.2 * size).mean()),
        int(both.sum()),
    )


def test_detected_keypoints_match_coco_ground_truth(detected: tuple[Path, Path, dict]) -> None:
    """For each COCO photo, the detected person against the nearest ground-truth person (COCO-17, px)."""
    _, out, _ = detected
    gt = json.loads((COCO / "test_coco.json").read_text())
    samples = {s.image["file_name"]: s for s in read_dataset(out).iter_samples()}
    pck10, pck20 = [], []
    for img in gt["images"]:
        found = samples[f"coco/{img['file_name']}"].keypoints
        candidates = []
        for ann in gt["annotations"]:
            if ann["image_id"] == img["id"] and ann["num_keypoints"] >= 5:
                truth = np.asarray(ann["keypoints"], float).reshape(17, 3)
                candidates.append((*_pck(found, truth, max(ann["bbox"][2:])), max(ann["bbox"][2:])))
        mean_err, p10, p20, n, size = min(candidates)
        assert n >= 10, f"{img['file_name']}: only {n} keypoints labelled in both"
        assert mean_err < 0.15 * size, (
            f"{img['file_name']}: mean error {mean_err:.1f} px, person {size:.0f} px"
        )
        pck10.append(p10)
        pck20.append(p20)
    # Measured (mediapipe 0.10.21, complexity 1): PCK@0.2 = 1, 1, 1, 0.875; PCK@0.1 mean 0.78.
    assert np.mean(pck20) >= 0.9 and np.mean(pck10) >= 0.6


def _match_coco_people(out: Path, name: str) -> tuple[int, int, list[float], int]:
    """Ground-truth people (num_keypoints > 0) found at bbox IoU >= 0.5, their PCK@0.1 (of the larger bbox side)."""
    from p2m.annotate.multi_pose import box_overlap

    gt = json.loads((COCO / "test_coco.json").read_text())
    data = json.loads(subject_file(out, name, 1, "data").read_text())
    file_of = {img["id"]: Path(img["file_name"]).name for img in data["images"]}
    found = total = 0
    pck = []
    for img in gt["images"]:
        preds = [a for a in data["annotations"] if file_of[a["image_id"]] == img["file_name"]]
        used: set[int] = set()
        for ann in gt["annotations"]:
            if ann["image_id"] != img["id"] or ann["num_keypoints"] == 0:
                continue
            total += 1
            scored = [
                (box_overlap(np.array(p["bbox"]), np.array(ann["bbox"]))[0], i)
                for i, p in enumerate(preds)
                if i not in used
            ]
            if not scored or max(scored)[0] < 0.5:
                continue
            i = max(scored)[1]
            used.add(i)
            found += 1
            truth = np.asarray(ann["keypoints"], float).reshape(17, 3)
            pck.append(
                _pck(np.asarray(preds[i]["keypoints"], float).reshape(17, 3), truth, max(ann["bbox"][2:]))[1]
            )
    return found, total, pck, len(data["annotations"])


def test_detect_finds_every_person_of_group_photos(tmp_path: Path) -> None:
    """The 4 COCO photos hold 12 annotated people (1, 2, 4 and 5 per photo): each is found as its own frame."""
    if not COCO.is_dir():
        pytest.skip(f"shared photo fixtures absent: {COCO}")
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    src = tmp_path / "src"
    src.mkdir()
    for p in COCO.glob("*.jpg"):
        shutil.copy(p, src / p.name)
    single = detect(src, tmp_path / "one", progress=False, max_people=1)
    result = CliRunner().invoke(main, ["annotate", "detect", str(src), "--out", str(tmp_path / "all")])
    assert result.exit_code == 0, result.output
    one_found, total, _, _ = _match_coco_people(tmp_path / "one", "photos")
    found, total, pck, written = _match_coco_people(tmp_path / "all", "photos")
    # Measured (mediapipe 0.10.21, --tiles 2): 10 of 12 found, 10 written (no false person), PCK@0.1 0.85;
    # the single-person path finds 4 of 12.
    assert total == 12 and single["images/person"] == 4 and one_found == 4
    assert found >= 9 and written <= found + 1 and np.mean(pck) >= 0.75, (found, written, pck)
    assert validate(tmp_path / "all").ok
    data = json.loads(subject_file(tmp_path / "all", "photos", 1, "data").read_text())
    # One person per image record (one frame each, so each has its own 3D fit); the photo's camera is shared.
    per_record = [sum(a["image_id"] == img["id"] for a in data["annotations"]) for img in data["images"]]
    assert per_record == [1] * len(data["images"])
    group = [img for img in data["images"] if img["file_name"] == "000000197388.jpg"]
    assert len(group) >= 4 and len({img["cam_idx"] for img in group}) == 1
    assert sorted(img["person_idx"] for img in group) == list(range(len(group)))
    assert len({(img["frame_idx"]) for img in data["images"]}) == len(data["images"])


def test_detect_reads_a_crawl_manifest(tmp_path: Path) -> None:
    if not PEOPLE.is_dir():
        pytest.skip(f"shared photo fixtures absent: {PEOPLE}")
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from p2m.crawler.manifest import SCHEMA

    crawl = tmp_path / "crawl"
    rows = []
    for i, name in enumerate(["camera.png", "camera.png", "missing.png"]):
        data = (PEOPLE / name).read_bytes() if name != "missing.png" else b""
        sha = hashlib.sha256(data).hexdigest()
        rel = f"images/{sha[:2]}/{sha}.png"
        if data:
            (crawl / rel).parent.mkdir(parents=True, exist_ok=True)
            (crawl / rel).write_bytes(data)
        status = ["ok", "duplicate", "failed"][i]
        rows.append(
            {
                "url": f"http://127.0.0.1/{i}.png",
                "page_url": "http://127.0.0.1/page.html",
                "sha256": sha if data else None,
                "status": status,
                "kind": "image",
                "license": "CC0-1.0" if i == 0 else "",
                "path": rel if data else None,
                "width": 512,
                "height": 512,
            }
        )
    cols = {n: [r.get(n) for r in rows] for n in SCHEMA.names}
    pq.write_table(pa.table(cols, schema=SCHEMA), crawl / "manifest.parquet")
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["annotate", "detect", str(crawl), "--out", str(out), "--name", "web"])
    assert result.exit_code == 0, result.output
    assert "1 images with a person" in result.output
    data = json.loads(subject_file(out, "web", 1, "data").read_text())
    (img,) = data["images"]
    sha = rows[0]["sha256"]
    assert img["file_name"] == f"{sha[:2]}/{sha}.png" and (out / "images" / img["file_name"]).is_file()
    assert img["source_url"] == "http://127.0.0.1/0.png" and img["license"] == "CC0-1.0"
    assert img["page_url"] == "http://127.0.0.1/page.html" and len(data["annotations"]) == 1
    stats = json.loads((out / "detect_stats.json").read_text())
    assert stats["manifest/skipped/duplicate"] == 1 and stats["manifest/skipped/failed"] == 1
    assert validate(out).ok


# ------------------------------------------------------------------------------------------------ renders
@pytest.mark.slow
@pytest.mark.body
def test_detect_on_rendered_anny_bodies_has_small_pixel_error(tmp_path: Path) -> None:
    """Render anny (known COCO keypoints) at 512x512 in three poses; MediaPipe's keypoints must land < 10 px off."""
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    from p2m.paths import cache_dir, configure_third_party_caches

    if not any((cache_dir() / "anny").glob("**/*.safetensors")):
        pytest.skip(f"no anny cache under {cache_dir() / 'anny'}; run `python -m p2m.body.prepare`")
    configure_third_party_caches()
    torch = pytest.importorskip("torch")
    from p2m.body import create
    from p2m.render import procedural_background, render_mesh

    body = create("anny", topology="full")
    names = list(body.bone_names)
    pose = torch.zeros(3, body.num_bones, 3)
    pose[1, 0, 2] = 0.5  # turned 29 degrees about the vertical
    pose[2, names.index("LeftArm"), 1] = 0.8  # an arm raised, a forearm bent, a leg back
    pose[2, names.index("RightForeArm"), 0] = -1.0
    pose[2, names.index("LeftUpLeg"), 0] = -0.5
    with torch.no_grad():
        res = body(pose, torch.full((3, body.num_shape), 0.5), torch.zeros(3, 3))
    f, c = 1000.0, (255.5, 255.5)
    truth = {}
    for b in range(3):

        def to_cam(a: np.ndarray) -> np.ndarray:  # anny: +X left, -Y forward, +Z up; camera 4.5 m in front
            return np.stack([a[:, 0], -a[:, 2], a[:, 1] + 4.5], axis=1)

        verts, kp = to_cam(res.vertices[b].double().numpy()), to_cam(res.keypoints[b].double().numpy())
        bg = procedural_background(512, 512, np.random.default_rng(b))
        img = render_mesh(verts, body.faces.numpy(), f, c, (512, 512), background=bg).image
        Image.fromarray(img).save(tmp_path / f"r{b}.png")
        truth[f"r{b}.png"] = f * kp[:, :2] / kp[:, 2:] + np.asarray(c)
    out = tmp_path / "ds"
    stats = detect(tmp_path, out, name="renders", progress=False)
    assert stats["images/person"] == 3
    errors = []
    for s in read_dataset(out).iter_samples():
        kp = s.keypoints
        vis = kp[:, 2] > 0
        assert vis.sum() >= 15, s.image["file_name"]
        errors.append(np.linalg.norm(kp[vis, :2] - truth[s.image["file_name"]][vis], axis=1))
    mean = float(np.concatenate(errors).mean())
    assert mean < 10.0, f"mean 2D error {mean:.2f} px on 512x512 renders"
    assert validate(out).ok


@pytest.mark.slow
@pytest.mark.body
def test_every_person_of_a_group_photo_gets_its_own_fit(tmp_path: Path) -> None:
    if not COCO.is_dir():
        pytest.skip(f"shared photo fixtures absent: {COCO}")
    pytest.importorskip("mediapipe", reason="the `detect` extra (mediapipe==0.10.21) is not installed")
    from p2m.annotate.fit import fit_bodies

    shutil.copy(COCO / "000000196141.jpg", tmp_path / "group.jpg")  # 4 annotated people
    stats = detect(tmp_path, tmp_path / "ds", progress=False)
    assert stats["people"] >= 3
    fitted = fit_bodies(
        tmp_path / "ds", device="cpu", iters=30, topology="notoes_collapse10pc", progress=False
    )
    assert fitted["annotations/fitted"] == stats["people"] == fitted["frames/fitted"]
    assert fitted["annotations/valid"] >= stats["people"] - 1
    joints = json.loads(subject_file(tmp_path / "ds", "photos", 1, "joint_3d").read_text())["1"]["1"]
    assert len(joints) >= fitted["annotations/valid"]
    assert validate(tmp_path / "ds").ok
