"""Body parameters whose lengths do not fit the body model they name are refused by `p2m annotate validate` and
by `p2m shard` (through the layout reader), not first by the trainer."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from p2m.body import ANNY_SHAPE_NAMES, param_sizes
from p2m.cli import main
from p2m.layout import DatasetWriter, subject_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _layout_helpers import write_toy_dataset  # noqa: E402

PARAMS = "annotations/toy_subject1_body_param.json"


def _edit_first_frame(root: Path, change: Callable[[dict], None]) -> str:
    """Apply ``change`` to the body parameters of the first frame of subject 1; return the frame label."""
    path = subject_file(root, "toy", 1, "body_param")
    params = json.loads(path.read_text())
    a = next(iter(params))
    s = next(iter(params[a]))
    f = next(iter(params[a][s]))
    change(params[a][s][f])
    path.write_text(json.dumps(params))
    return f"{a}/{s}/{f}"


CASES: dict[str, tuple[Callable[[dict], None], str]] = {
    "anny_pose_of_length_1": (lambda p: p.update(pose=[0.1]),
                              "field 'pose' has 1 number, expected 93 for anny rig 'cmu_mb' (31 bones x 3 axis-angle)"),
    "anny_without_rig": (lambda p: (p.pop("rig"), p.update(pose=[0.1] * 6)),
                         "field 'pose' has 6 numbers, expected 3 x the bones of an anny rig (cmu_mb 93, anny 312, "
                         "anny-notoes 228, anny-notoes-nohands 114, mixamo 156, game_engine 159)"),
    "anny_shape_of_length_2": (lambda p: p.update(shape=[0.5, 0.5]),
                               "field 'shape' has 2 numbers, expected 6 for anny (phenotypes gender, age, muscle, "
                               "weight, height, proportions)"),
    "smpl_pose_of_length_69": (lambda p: p.update(model="smpl", pose=[0.0] * 69, shape=[0.0] * 10),
                               "field 'pose' has 69 numbers, expected 72 for SMPL"),
    "smpl_shape_of_length_6": (lambda p: p.update(model="smpl", pose=[0.0] * 72),
                               "field 'shape' has 6 numbers, expected 10 for SMPL"),
}  # fmt: skip


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_toy_dataset(tmp_path / "ds", subjects=(1,), frames=2)


@pytest.mark.parametrize("case", sorted(CASES))
def test_validate_reports_the_wrong_length(dataset: Path, case: str) -> None:
    change, message = CASES[case]
    frame = _edit_first_frame(dataset, change)
    result = CliRunner().invoke(main, ["annotate", "validate", "-q", str(dataset)])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[:-1] == [f"ERROR {PARAMS}: id {frame}: body_param: {message}"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_shard_refuses_the_wrong_length_and_writes_no_shard(dataset: Path, tmp_path: Path, case: str) -> None:
    change, message = CASES[case]
    frame = _edit_first_frame(dataset, change)
    out = tmp_path / "shards"
    # `p2m shard` validates first (validate's words) and writes nothing at all
    result = CliRunner().invoke(main, ["shard", str(dataset), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output == (
        f"Error: {dataset}: not a valid dataset, nothing written: {PARAMS}: id {frame}: "
        f"body_param: {message}; see `p2m annotate validate {dataset}`\n"
    )
    assert not out.exists()
    # without that check, the layout reader refuses it too
    result = CliRunner().invoke(main, ["shard", str(dataset), "--out", str(out), "--no-validate"])
    assert result.exit_code == 1, result.output
    assert result.output == f"Error: {dataset / PARAMS}: frame {frame}: {message}\n"
    assert not list(out.glob("*.tar"))  # the writer's index of an unfinished run lists no shard
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] is False and all(not sp["shards"] for sp in index["splits"].values())


def test_writer_refuses_the_wrong_length(tmp_path: Path) -> None:
    from p2m.errors import LayoutError

    with pytest.raises(LayoutError, match=r"body_param: field 'pose' has 1 number, expected 93 for anny rig"):
        with DatasetWriter(tmp_path, "x") as w:
            w.add_frame(
                1,
                {
                    "file_name": "a.jpg",
                    "width": 10,
                    "height": 10,
                    "action_idx": 1,
                    "subaction_idx": 1,
                    "cam_idx": 1,
                    "frame_idx": 0,
                },
                [{"bbox": [0, 0, 1, 1], "keypoints": [[0, 0, 0]] * 17, "joints_2d_h36m": [[0, 0, 0]] * 17}],
                body_param={
                    "model": "anny",
                    "rig": "cmu_mb",
                    "pose": [0.1],
                    "shape": [0.5] * 6,
                    "trans": [0, 0, 0],
                },
            )
    assert not (tmp_path / "annotations").exists()


def test_unknown_rig_is_a_warning_not_a_problem(dataset: Path) -> None:
    _edit_first_frame(dataset, lambda p: p.update(rig="my_rig", pose=[0.1] * 7))
    result = CliRunner().invoke(main, ["annotate", "validate", str(dataset)])
    assert result.exit_code == 0, result.output
    assert (
        f"warning {PARAMS}: body model 'anny' rig 'my_rig': p2m does not know its parameter sizes, so the "
        "lengths of pose and shape were not checked"
    ) in result.output.splitlines()


def test_the_size_table_matches_the_real_body_model(body_369) -> None:
    """The sizes come from a table (no model is built to check a file); the real cmu_mb model agrees with it."""
    sizes = param_sizes("anny", body_369.rig)
    assert sizes == {"pose": (3 * body_369.num_bones,), "shape": (body_369.num_shape,), "trans": (3,)}
    assert body_369.shape_names == ANNY_SHAPE_NAMES
