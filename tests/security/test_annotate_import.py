"""`p2m annotate import coco` on hostile COCO files: one line naming file, record and field, nothing written."""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from p2m.cli import main

BIG = int("9" * 400)  # a valid JSON integer that no float can hold


def coco_file() -> dict[str, Any]:
    """A small valid COCO person_keypoints object: one image, one person."""
    kp: list[float] = []
    for i in range(17):
        kp += [10.0 + i, 20.0 + i, 2]
    return {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 100, "license": 1}],
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
        "licenses": [{"id": 1, "name": "CC BY 2.0"}],
    }


def _set(path: str, value: Any) -> Callable[[dict], str]:
    """An edit that sets ``a.0.b`` to ``value`` and returns the JSON text."""

    def edit(obj: dict) -> str:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
        return json.dumps(obj)

    return edit


def _text(text: str) -> Callable[[dict], str]:
    return lambda obj: text


DEEP = '{"images": ' + "[" * 100_000 + "]" * 100_000 + "}"
LONG_INT = '{"images": [], "annotations": [], "categories": [{"id": ' + "7" * 5000 + ', "name": "person"}]}'

# case -> (edit of the valid file, the one line after "{file}: ")
CASES: dict[str, tuple[Callable[[dict], str], str]] = {
    "licenses_null": (_set("licenses", None), "field 'licenses' must be a list, got nothing (null)"),
    "licenses_int": (_set("licenses", 3), "field 'licenses' must be a list, got int"),
    "license_id_list": (_set("licenses.0.id", [1]), "licenses[0]: field 'id' = [1], expected an integer"),
    "category_id_list": (_set("categories.0.id", [1]), "categories[0]: field 'id' = [1], expected an integer"),
    "image_id_list": (_set("images.0.id", [1]), "image id [1]: field 'id' = [1], expected a non-zero integer"),
    "image_license_list": (_set("images.0.license", [1]),
                           "image id 1: field 'license' = [1], expected a license id (integer) or name"),
    "image_width_huge": (_set("images.0.width", BIG), "image id 1: field 'width' = "
                         f"{str(BIG)[:57]}... (400 characters), expected a positive integer (at most 1000000 px)"),
    "annotation_category_id_list": (_set("annotations.0.category_id", [1]),
                                    "annotation id 5: field 'category_id' = [1], expected an integer id"),
    "annotation_image_id_list": (_set("annotations.0.image_id", [1]),
                                 "annotation id 5: field 'image_id' = [1], expected an integer id"),
    "keypoint_400_digits": (_set("annotations.0.keypoints.0", BIG),
                            f"annotation id 5: field 'keypoints' holds {str(BIG)[:57]}... (400 characters), "
                            "expected 17 x (x, y, v) = 51 numbers (finite)"),
    "bbox_400_digits": (_set("annotations.0.bbox.2", BIG), f"annotation id 5: field 'bbox' holds {str(BIG)[:57]}... "
                        "(400 characters), expected [x, y, w, h] (finite)"),
    "area_400_digits": (_set("annotations.0.area", BIG), f"annotation id 5: field 'area' = {str(BIG)[:57]}... "
                        "(400 characters), expected a finite number >= 0"),
    "nested_100k_deep": (_text(DEEP), f"invalid JSON at line 1 column {DEEP.index('[') + 500}: arrays/objects "
                         "nested more than 500 levels deep"),
    "integer_5000_digits": (_text(LONG_INT), f"invalid JSON at line 1 column {LONG_INT.index('7') + 1}: an integer "
                            "of more than 4300 digits"),
}  # fmt: skip


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _import(src: Path, out: Path):
    return CliRunner().invoke(
        main, ["annotate", "import", "coco", str(src), "--out", str(out), "--no-images"]
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_coco_file_is_one_line_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    edit, message = CASES[case]
    src = tmp_path / f"{case}.json"
    src.write_text(edit(copy.deepcopy(coco_file())))
    fresh = tmp_path / "fresh"
    result = _import(src, fresh)
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {src}: {message}\n"
    assert not fresh.exists()
    # importing into an existing dataset leaves every file of it as it was
    good = tmp_path / "good.json"
    good.write_text(json.dumps(coco_file()))
    existing = tmp_path / "existing"
    assert _import(good, existing).exit_code == 0
    before = _digest(existing)
    result = _import(src, existing)
    assert result.exit_code == 1 and result.output == f"Error: {src}: {message}\n"
    assert _digest(existing) == before


def test_valid_file_still_imports(tmp_path: Path) -> None:
    """The checks above refuse only what is wrong: the same file unedited imports (licence kept)."""
    src = tmp_path / "ok.json"
    src.write_text(json.dumps(coco_file()))
    result = _import(src, tmp_path / "ds")
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "ds" / "annotations" / "coco_subject1_data.json").read_text())
    assert data["images"][0]["license"] == "CC BY 2.0" and data["images"][0]["license_id"] == 1


# ------------------------------------------------------------------------------------------------ Human3.6M
H36M = (
    Path(__file__).resolve().parents[3] / "shared" / "external-fixtures" / "mmpose-h36m" / "pose2mesh-format"
)
S7 = "Human36M_subject7"
POSE_BIG = [BIG] + [0.0] * 71


H36M_CASES: dict[str, tuple[str, Callable[[Any], None], str]] = {
    "image_id_list": ("data", lambda d: d["images"][0].update(id=[3]), "image id [3]: field 'id' = [3], expected an integer"),
    "annotation_image_id_list": ("data", lambda d: d["annotations"][0].update(image_id=[3]),
                                 "annotation id 3: field 'image_id' = [3], expected an integer id"),
    "width_400_digits": ("data", lambda d: d["images"][0].update(width=BIG),
                         f"image id 3: field 'width' = {str(BIG)[:57]}... (400 characters), expected 1 to 1000000 px"),
    "smpl_pose_400_digits": ("smpl_param", lambda o: next(iter(next(iter(next(iter(o.values())).values())).values()))
                             .update(pose=POSE_BIG), f"'pose' holds {repr(POSE_BIG)[:57]}... ({len(repr(POSE_BIG))} characters), "
                             "expected 72 finite numbers"),
}  # fmt: skip


@pytest.mark.skipif(not H36M.is_dir(), reason=f"shared Human3.6M fixture absent: {H36M}")
@pytest.mark.parametrize("case", sorted(H36M_CASES))
def test_hostile_h36m_file_is_one_line_error_and_writes_nothing(tmp_path: Path, case: str) -> None:
    import shutil

    kind, edit, message = H36M_CASES[case]
    src = tmp_path / "Human36M"
    shutil.copytree(H36M / "Human36M" / "annotations", src / "annotations")
    path = src / "annotations" / f"{S7}_{kind}.json"
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["annotate", "import", "h36m", str(src), "--out", str(out)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}") and lines[0].endswith(message), (
        result.output
    )
    assert not out.exists()


def test_json_errors_point_at_the_culprit_not_at_look_alikes_in_strings() -> None:
    """Brackets and digit runs inside strings, and long fractions (which Python reads fine), are not blamed."""
    from p2m.errors import P2MError
    from p2m.io import MAX_JSON_DEPTH, loads_json

    decoy = '{"note": "' + "[" * 600 + "1" * 5000 + '", "x": 0.' + "5" * 5000 + ", "
    deep = decoy + '"y":\n  ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(P2MError) as err:
        loads_json(deep, "d.json")
    assert str(err.value) == (
        f"d.json: invalid JSON at line 2 column {2 + MAX_JSON_DEPTH}: arrays/objects nested "
        f"more than {MAX_JSON_DEPTH} levels deep"
    )
    long_int = decoy + '"z": [1, 2,\n\n -' + "4" * 4301 + "]}"
    with pytest.raises(P2MError) as err:
        loads_json(long_int.encode(), "i.json")
    assert str(err.value) == "i.json: invalid JSON at line 3 column 2: an integer of more than 4300 digits"
    assert loads_json(decoy + '"ok": [[[1]]]}', "fine.json")["ok"] == [[[1]]]
