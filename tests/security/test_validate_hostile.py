"""`p2m annotate validate` on hostile files: each problem is one ERROR line naming file, record and field."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from p2m.annotate.import_coco import import_coco
from p2m.cli import main
from p2m.layout import PERSON_CATEGORY

BIG = int("9" * 400)
DATA = "annotations/coco_subject1_data.json"
CAMERA = "annotations/coco_subject1_camera.json"


def _short(value: Any) -> str:
    """How validate shows a long value: 77 characters, then the length."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}... ({len(text)} characters)"


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


def _edit(fn: Callable[[dict], Any]) -> Callable[[str], str]:
    def apply(text: str) -> str:
        obj = json.loads(text)
        fn(obj)
        return json.dumps(obj)

    return apply


KP_BIG = [BIG] + [20.0] + [2] * 49
DEEP = '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}"
LONG_INT = '{"images": [{"id": ' + "3" * 5000 + "}]}"

# case -> (file, edit of its text, the expected ERROR line after "ERROR ")
CASES: dict[str, tuple[str, Callable[[str], str], str]] = {
    "licenses_null": (DATA, _edit(lambda d: d.update(licenses=None)),
                      f"{DATA}: licenses: top-level value is null, expected a list"),
    "licenses_int": (DATA, _edit(lambda d: d.update(licenses=4)),
                     f"{DATA}: licenses: top-level value is an int, expected a list"),
    "category_id_list": (DATA, _edit(lambda d: d["categories"][0].update(id=[1])),
                         f"{DATA}: categories: categories[0] = {_short({**PERSON_CATEGORY, 'id': [1]})}, "
                         "expected {id: int, name: str, ...}"),
    "image_id_list": (DATA, _edit(lambda d: d["images"][0].update(id=[1])),
                      f"{DATA}: id [1]: id: image id [1] is not an integer"),
    "annotation_image_id_list": (DATA, _edit(lambda d: d["annotations"][0].update(image_id=[1])),
                                 f"{DATA}: id 1: image_id: value [1], expected an integer id"),
    "annotation_category_id_list": (DATA, _edit(lambda d: d["annotations"][0].update(category_id=[1])),
                                    f"{DATA}: id 1: category_id: value [1], expected an integer id"),
    "keypoint_400_digits": (DATA, _edit(lambda d: d["annotations"][0].update(keypoints=KP_BIG)),
                            f"{DATA}: id 1: keypoints: value {_short(KP_BIG)}, expected 51 numbers (17 x, y, v)"),
    "area_400_digits": (DATA, _edit(lambda d: d["annotations"][0].update(area=BIG)),
                        f"{DATA}: id 1: area: value {_short(BIG)}, expected a finite number >= 0"),
    "frame_idx_infinite": (DATA, lambda t: t.replace('"frame_idx":1', '"frame_idx":1e999'),
                           f"{DATA}: id 1: frame_idx: value inf, expected an integer"),
    "camera_400_digits": (CAMERA, _edit(lambda c: c["1"].update(t=[BIG, 0, 0])),
                          f"{CAMERA}: 1: cam_idx 1: camera field 't': {_short([BIG, 0, 0])} is not 3 numbers"),
    "nested_100k_deep": (DATA, lambda t: DEEP, f"{DATA}: invalid JSON at line 1 column {DEEP.index('[') + 500}: "
                         "arrays/objects nested more than 500 levels deep"),
    "integer_5000_digits": (DATA, lambda t: LONG_INT, f"{DATA}: invalid JSON at line 1 column "
                            f"{LONG_INT.index('3') + 1}: an integer of more than 4300 digits"),
}  # fmt: skip


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    src = tmp_path / "coco.json"
    src.write_text(json.dumps(_coco()))
    out = tmp_path / "ds"
    import_coco(src, out, with_images=False, progress=False)
    return out


def test_the_unedited_dataset_is_valid(dataset: Path) -> None:
    result = CliRunner().invoke(main, ["annotate", "validate", "-q", str(dataset)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_file_gives_error_lines_not_a_traceback(dataset: Path, case: str) -> None:
    rel, edit, expected = CASES[case]
    path = dataset / rel
    path.write_text(edit(path.read_text()))
    before = _digest(dataset)
    result = CliRunner().invoke(main, ["annotate", "validate", "-q", str(dataset)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert f"ERROR {expected}" in lines, result.output
    assert all(line.startswith("ERROR ") for line in lines[:-1]), result.output
    assert lines[-1].startswith(f"{dataset}: 1 dataset name(s)") and "problem(s)" in lines[-1]
    assert _digest(dataset) == before
