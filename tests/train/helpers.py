"""Helpers of the trainer tests: the tiny config, subprocess runs of the p2m CLI."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "configs" / "tiny_pose2mesh.yaml"
TINY_POSENET = REPO / "configs" / "tiny_posenet.yaml"
#: The tiny Pose2Mesh config shrunk further for tests: the 369-vertex mesh, narrow layers, short epochs.
TINY_SETS: tuple[str, ...] = (
    "model.body.topology=notoes_collapse3pc",
    "model.posenet.hidden=64",
    "model.posenet.dropout=0.2",  # dropout makes exact resume depend on the restored RNG state
    "model.meshnet.joint_channels=[8,8]",
    "model.meshnet.level_channels=[[16,16],[16,16],[16,16]]",
    "model.meshnet.head_channels=[8]",
    "train.batch_size=16",
    "train.epochs=2",
    "train.lr_steps=[1]",
    "train.num_workers=0",
    "train.shuffle_buffer=64",
    "train.log_every=2",
    "train.ckpt_every_steps=3",
    "train.val_batch_size=64",
)


def tiny_config(*extra: str):
    from p2m.pose2mesh.config import load_config

    return load_config(TINY_CONFIG, [*TINY_SETS, *extra])


def run_env() -> dict[str, str]:
    """Environment for p2m subprocesses: the project caches, one thread (steady timing on shared CPUs)."""
    env = dict(os.environ)
    env.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    return env


def p2m_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``python -m p2m ARGS`` in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "p2m", *args],
        cwd=REPO,
        env=env or run_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def p2m_killed(when: str, n: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``p2m ARGS`` through tests/train/kill_driver.py, which SIGKILLs it ``when`` ("after-step" or
    "during-save") reaches ``n``."""
    driver = Path(__file__).with_name("kill_driver.py")
    env = run_env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return subprocess.run(
        [sys.executable, str(driver), when, str(n), "--", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def train_args(
    config: Path, data: Path, out: Path, *extra: str, sets: tuple[str, ...] = TINY_SETS
) -> list[str]:
    args = [
        "train",
        "--config",
        str(config),
        "--data",
        str(data),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
    ]
    for s in sets:
        args += ["--set", s]
    return args + list(extra)


@contextlib.contextmanager
def one_thread():
    """torch with one intra-op thread inside the block (steady timing on shared CPUs), then as before."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
