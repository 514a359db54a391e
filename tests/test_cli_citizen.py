"""Every command a good citizen: one-line errors with exit 1, checks before slow work, the same option names,
-v/-q and --progress everywhere, help texts that point at what users have."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml
from _layout_helpers import write_toy_dataset
from click.testing import CliRunner

from p2m.cli import STAGES, main
from p2m.cli.common import DeviceType

REPO = Path(__file__).resolve().parents[1]
#: Commands with a long step: each draws a progress bar on a terminal and takes --no-progress.
LONG_STEPS = [("synth",), ("shard", "write"), ("annotate", "detect"), ("annotate", "fit"), ("crawl",), ("train",),
              ("eval",)]  # fmt: skip


def _commands() -> dict[tuple[str, ...], click.Command]:
    """Every command under `p2m`, by its path (groups included)."""
    out: dict[tuple[str, ...], click.Command] = {}
    ctx = click.Context(main)

    def walk(path: tuple[str, ...], cmd: click.Command) -> None:
        out[path] = cmd
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                walk((*path, name), sub)

    for name in STAGES:
        walk((name,), main.get_command(ctx, name))
    return out


def _run(*args: str) -> tuple[int, list[str]]:
    res = CliRunner().invoke(main, list(args), prog_name="p2m")
    return res.exit_code, res.output.strip().splitlines()


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "ds")


@pytest.fixture(scope="module")
def toy_shards(toy, tmp_path_factory) -> Path:
    from p2m.shards import build_shards

    out = tmp_path_factory.mktemp("toy-shards") / "shards"
    build_shards([toy], out, progress=False)  # no --split: everything in "train"
    return out


# ------------------------------------------------------------------------------------------------ options
def test_every_command_takes_verbose_and_quiet():
    for path, cmd in _commands().items():
        names = {p.name for p in cmd.params}
        assert {"verbose", "quiet"} <= names, path


def test_long_steps_take_no_progress_and_default_to_the_terminal():
    commands = _commands()
    for path in LONG_STEPS:
        opt = next(p for p in commands[path].params if p.name == "progress")
        assert "--no-progress" in opt.secondary_opts and opt.default is None, path


def test_device_and_batch_size_agree_everywhere():
    devices = 0
    for path, cmd in _commands().items():
        for p in cmd.params:
            if p.name == "device":
                devices += 1
                assert isinstance(p.type, DeviceType) and p.default == "auto", path
            assert "--batch" not in (p.get_help_record(click.Context(cmd)) or ("",))[0].split(", "), path
    assert devices >= 5  # fit, train, eval, infer, demo
    fit = _commands()[("annotate", "fit")]
    assert (
        fit.make_context("fit", [str(REPO), "--batch", "8", "--device", "cuda:1"]).params["batch_size"] == 8
    )
    code, lines = _run("annotate", "fit", str(REPO), "--device", "gpu")
    assert (
        code == 2
        and lines[-1] == "Error: Invalid value for '--device': 'gpu': expected auto, cpu, cuda or cuda:N"
    )


def test_help_texts_point_at_what_users_have():
    code, lines = _run("annotate", "--help")
    text = "\n".join(lines)
    assert code == 0 and "docs/formats.md" in text and "DESIGN.md" not in text
    code, lines = _run("shard", "--help")
    assert code == 0 and not [line for line in lines if line.strip() == "DATASET..."]
    code, lines = _run("shard", str(REPO), "--bogus")
    assert code == 2 and "Try 'p2m shard --help' for help." in lines and "shard write" not in "\n".join(lines)


# ------------------------------------------------------------------------------------------------ shard
def test_shard_with_images_on_a_pose_only_dataset_is_an_error(toy, tmp_path):
    code, lines = _run("shard", str(toy), "--out", str(tmp_path / "s"), "--with-images")
    assert code == 1 and lines == [
        f"Error: {toy}: no images/ folder (a pose-only dataset), so --with-images would "
        "write nothing; leave it out for pose-only shards"
    ]
    assert not (tmp_path / "s").exists()


def test_shard_split_of_a_subject_that_does_not_exist_is_an_error(toy, tmp_path):
    code, lines = _run("shard", str(toy), "--out", str(tmp_path / "s"), "--split", "train=7")
    assert code == 1 and lines == [f"Error: --split train=7: no subject S7 in {toy} (subjects there: S1, S2)"]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("fault", ["width_null", "duplicate_annotation_id"])
def test_shard_refuses_what_validate_rejects(toy, tmp_path, fault):
    import shutil

    ds = shutil.copytree(toy, tmp_path / "ds")
    path = ds / "annotations" / "toy_subject2_data.json"
    data = json.loads(path.read_text())
    if fault == "width_null":
        data["images"][0]["width"] = None
        expect = f"id {data['images'][0]['id']}: width: value None, expected an integer"
    else:
        data["annotations"][1]["id"] = data["annotations"][0]["id"]
        expect = (
            f"id {data['annotations'][0]['id']}: id: duplicate annotation id, also in "
            "annotations/toy_subject2_data.json (ids are unique across all subject files)"
        )
    path.write_text(json.dumps(data))
    code, lines = _run("shard", str(ds), "--out", str(tmp_path / "s"))
    assert code == 1 and lines == [
        f"Error: {ds}: not a valid dataset, nothing written: "
        f"annotations/toy_subject2_data.json: {expect}; see `p2m annotate validate {ds}`"
    ]
    assert not (tmp_path / "s").exists()
    assert _run("shard", str(ds), "--out", str(tmp_path / "s"), "--no-validate")[0] == 0  # the user's choice


def test_annotate_detect_on_an_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    code, lines = _run("annotate", "detect", str(tmp_path / "empty"), "--out", str(tmp_path / "ds"))
    assert code == 1 and lines == [
        f"Error: {tmp_path / 'empty'}: no images found; expected a crawl output "
        "(manifest.parquet with status ok rows) or a folder of .jpg/.png/.webp images"
    ]


# ------------------------------------------------------------------------------------------------ train, eval
def test_eval_on_a_split_the_shards_lack_names_the_splits_they_have(toy_shards, tmp_path):
    for split in ("test", "val"):  # shards made without --split hold only "train"
        code, lines = _run("eval", str(tmp_path), "--data", str(toy_shards), "--split", split)
        assert code == 1 and lines == [
            f"Error: {toy_shards}: no split {split!r} (--split); the shards have: train (12 samples)"
        ]


def test_evaluate_checkpoint_checks_the_split_before_the_checkpoint(toy_shards, tmp_path):
    from p2m.errors import ShardError
    from p2m.pose2mesh.evaluate import evaluate_checkpoint

    with pytest.raises(ShardError) as info:
        evaluate_checkpoint(tmp_path / "no.pt", toy_shards, split="val")
    assert str(info.value) == f"{toy_shards}: no split 'val' (--split); the shards have: train (12 samples)"


def _python_cli(*args: str) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh interpreter; prints whether torch was imported (no model can load without it)."""
    code = (
        "import sys\nfrom p2m.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
        "    print('model loaded:', 'torch' in sys.modules)\n"
        "    raise\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def test_inputs_are_checked_before_the_model_loads(tmp_path):
    proc = _python_cli(
        "train",
        "--config",
        "tiny_pose2mesh",
        "--data",
        str(tmp_path / "nope"),
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'nope' / 'index.json'}: no shard index "
        "(expected the index.json that `p2m shard` writes)"
    ]
    assert proc.stdout.strip() == "model loaded: False"
    proc = _python_cli("infer", str(tmp_path), "--pose2d", "nope.json", "--out", str(tmp_path / "o"))
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "Error: nope.json: no such 2D pose file (expected a .json or .npy file)"
    ]
    assert proc.stdout.strip() == "model loaded: False"


def test_an_unknown_logger_is_a_bad_option(toy_shards, tmp_path):
    code, lines = _run(
        "train",
        "--config",
        "tiny_posenet",
        "--data",
        str(toy_shards),
        "--out",
        str(tmp_path / "r"),
        "--logger",
        "csv,wandb",
    )
    assert code == 2 and lines[-1] == (
        "Error: Invalid value for --logger: wandb: expected jsonl, csv, tensorboard "
        "(repeat or comma-separate)"
    )
    assert not (tmp_path / "r").exists()


def test_resume_on_a_folder_without_a_run_says_so(tmp_path):
    code, lines = _run("train", "--resume", "--out", str(tmp_path))
    assert code == 1 and lines == [
        f"Error: {tmp_path}: no run to resume (no config.yaml); start one with "
        f"--config CONFIG --data SHARDS --out {tmp_path}"
    ]


def test_shipped_config_by_name_and_print_config():
    from p2m.pose2mesh.config import load_config, to_dict

    code, lines = _run("train", "--config", "tiny_posenet", "--set", "train.lr=0.25", "--print-config")
    assert code == 0
    printed = yaml.safe_load("\n".join(lines))
    assert printed == to_dict(load_config(REPO / "configs" / "tiny_posenet.yaml", ["train.lr=0.25"]))
    assert printed["train"]["lr"] == 0.25
    code, lines = _run("train", "--config", "tiny_pos2mesh", "--print-config")
    shipped = ", ".join(sorted(p.stem for p in (REPO / "configs").glob("*.yaml")))
    assert code == 1 and lines == [
        f"Error: tiny_pos2mesh: no such config file, nor a shipped config (shipped: {shipped}); "
        "did you mean tiny_pose2mesh?"
    ]


def test_config_errors_name_dotted_keys_and_suggest_the_closest():
    from p2m.paths import find_config

    prefix = f"Error: Invalid value for --config/--set: {find_config('tiny_pose2mesh')}: "
    code, lines = _run(
        "train", "--config", "tiny_pose2mesh", "--print-config", "--set", "model.posenet.activation=rleu"
    )
    assert code == 2 and lines[-1:] == [
        prefix + "model.posenet.activation: 'rleu' is not one of ['relu', 'leaky_relu', "
        "'elu', 'gelu', 'silu', 'tanh']; did you mean relu?"
    ]
    code, lines = _run(
        "train", "--config", "tiny_pose2mesh", "--print-config", "--set", "model.posnet.hidden=8"
    )
    assert code == 2 and lines[-1:] == [
        prefix + "unknown config key model.posnet; did you mean model.posenet? (expected "
        "one of ['model.stage', 'model.joint_set', 'model.body', 'model.posenet', "
        "'model.meshnet'])"
    ]


# ------------------------------------------------------------------------------------------------ plot, logs
def test_plot_without_matplotlib_says_how_to_install_it(tmp_path):
    code = (
        "import sys\nsys.modules['matplotlib'] = None  # as if it were not installed\n"
        "from p2m.cli import main\nmain(sys.argv[1:])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "plot", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: p2m plot needs matplotlib, which is not installed: pip install 'p2m[plot]'"
    ]


@pytest.mark.slow
@pytest.mark.body
def test_default_log_level_shows_only_the_summary_line(tmp_path, body_369):
    args = [
        sys.executable,
        "-m",
        "p2m",
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--num",
        "8",
        "--poses",
        "sampler",
        "--topology",
        "notoes_collapse3pc",
    ]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no INFO from anny, no stats dict, no progress bar off a terminal
    assert len(proc.stdout.splitlines()) == 1 and proc.stdout.startswith("synth: 8 images, 2 frames")
    proc = subprocess.run(
        [*args[:5], str(tmp_path / "v"), *args[6:], "-v"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0 and "INFO p2m." in proc.stderr


@pytest.mark.slow
def test_detect_keeps_mediapipe_native_lines_out_of_stderr(tmp_path):
    pytest.importorskip("mediapipe", reason="the 'detect' extra is not installed")
    photos = REPO.parent / "shared" / "external-fixtures" / "public-domain-people-images"
    if not photos.is_dir():
        pytest.skip(f"{photos} absent (shared fixtures)")
    proc = subprocess.run(
        [sys.executable, "-m", "p2m", "annotate", "detect", str(photos), "--out", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no TFLite / absl / inference_feedback_manager.cc lines
    assert proc.stdout.startswith(f"{tmp_path / 'd'}: 2 images with a person")
