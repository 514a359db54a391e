"""SIGKILL of `p2m train` leaves no DataLoader worker behind (issue 12 item 9): workers die with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _toy_dataset import toy_dataset

from p2m.shards import build_shards

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="needs /proc and a parent-death signal (Linux)"
    ),
]


def _dataset(root: Path) -> Path:
    return toy_dataset(root, frames=256, seed=2)


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return state[state.rindex(")") + 2] != "Z"  # a zombie is dead, waiting for init to reap it


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_sigkill_of_a_training_run_leaves_no_worker(tmp_path):
    build_shards([_dataset(tmp_path / "ds")], tmp_path / "shards", maxcount=64, progress=False)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        OMP_NUM_THREADS="1",
    )
    env.setdefault("P2M_CACHE_DIR", str(REPO / ".cache"))
    cmd = [
        sys.executable,
        "-m",
        "p2m",
        "train",
        "--config",
        str(REPO / "configs" / "tiny_posenet.yaml"),
        "--data",
        str(tmp_path / "shards"),
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--no-progress",
        "--set",
        "train.num_workers=2",
        "--set",
        "train.batch_size=8",
        "--set",
        "train.epochs=1000",
        "--set",
        "train.val_split=null",
        "--set",
        "train.ckpt_every_steps=0",
    ]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    try:
        # training has started once metrics are logged; by then both workers exist
        assert _wait_for(
            lambda: (tmp_path / "run" / "metrics.jsonl").exists() or proc.poll() is not None, 120
        )
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert _wait_for(lambda: len(_children(proc.pid)) >= 2, 30)
        workers = _children(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        gone = _wait_for(lambda: not any(_alive(w) for w in workers), 3.0)
        assert gone, f"DataLoader workers {[w for w in workers if _alive(w)]} outlived the killed trainer"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for w in workers:  # the workers this test started, if the fix failed
            if _alive(w):
                os.kill(w, signal.SIGKILL)
