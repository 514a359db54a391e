"""Train the shipped model (p2m/data/models/pose2mesh_anny1229) end to end, in resumable chunks, and ship it.

    python scripts/train_release.py --out runs/release [--stage1-until 08:50] [--until 09:50] [--no-ship]

Steps (each skipped when its output exists, so a stopped run continues where it was; every training chunk is
``p2m train --max-steps N --resume``):

1. data: validation shards (held-out CMU subjects 2 and 3, ``p2m synth --poses cmu-eval --seed 3``) and the
   evaluation shards of the model card (``--seed 2``); training batches come from the synthetic source;
2. stage 1: PoseNet alone (configs/release_posenet.yaml) until its schedule ends or ``--stage1-until``;
3. stage 2: PoseNet + MeshNet on the 1,229-vertex mesh (configs/release_pose2mesh.yaml), PoseNet started from
   stage 1's best, until its schedule ends or ``--stage2-until``;
4. stage 3: the whole model fine-tuned from stage 2's best with a 10x normal-loss weight
   (configs/release_smooth.yaml), until its schedule ends or ``--until``;
5. ``p2m eval`` of stage 3's best checkpoint from GT 2D (and with the 2.4 px error model) on the evaluation shards;
6. ship: float16 weights into p2m/data/models/ (under 5 MB) and the model card beside them.

Hours: about 2 on 2 shared CPU cores for the schedules in the configs (the run of December 2026 stopped both
stages at a deadline: see the model card); on one GPU, minutes (the body model and the data are drawn there too).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE1 = ROOT / "configs" / "release_posenet.yaml"
STAGE2 = ROOT / "configs" / "release_pose2mesh.yaml"
STAGE3 = ROOT / "configs" / "release_smooth.yaml"
#: Optimizer steps per `p2m train` call of each stage (a process start costs ~15 s; a deadline is checked between).
CHUNK_STEPS = {"stage1": 2000, "stage2": 400, "stage3": 400}


def p2m(*args: str, log: Path | None = None) -> None:
    """Run ``python -m p2m ARGS`` (output appended to ``log``); raise on failure."""
    cmd = [sys.executable, "-m", "p2m", *args]
    print("+ p2m " + " ".join(args), flush=True)
    with open(log, "a") if log else open(os.devnull, "w") as fh:
        rc = subprocess.call(
            cmd, stdout=fh if log else None, stderr=subprocess.STDOUT if log else None, cwd=ROOT
        )
    if rc:
        raise SystemExit(f"p2m {args[0]} failed with exit code {rc}" + (f"; see {log}" if log else ""))


def deadline(text: str | None) -> float | None:
    """``HH:MM`` today (local time) as a timestamp; None stays None."""
    if not text:
        return None
    hh, mm = (int(x) for x in text.split(":"))
    now = dt.datetime.now()
    return now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()


def make_data(out: Path, log: Path) -> tuple[Path, Path]:
    """Validation and evaluation shards of the held-out CMU subjects (2 and 3)."""
    shards = {}
    for name, seed, num, first in (("val", 3, 2000, 11), ("test", 2, 4000, 9)):
        ds, sh = out / "data" / f"cmu_{name}", out / "shards" / f"cmu_{name}"
        if not (sh / "index.json").exists():
            p2m(
                "synth",
                "--out",
                str(ds),
                "--num",
                str(num),
                "--poses",
                "cmu-eval",
                "--seed",
                str(seed),
                "--subjects",
                "2",
                "--first-subject",
                str(first),
                "--topology",
                "1229",
                "--name",
                f"cmu{name}",
                log=log,
            )
            p2m("shard", str(ds), "--out", str(sh), "--split", f"{name}=*", log=log)
        shards[name] = sh
    return shards["val"], shards["test"]


def last_step(run: Path) -> tuple[int, bool]:
    """(global step, finished) of a run from its last checkpoint (0, False when it has not started)."""
    last = run / "checkpoints" / "last.pt"
    if not last.exists():
        return 0, False
    from p2m.pose2mesh.checkpoint import load_checkpoint

    state = load_checkpoint(last)
    epochs = state["config"]["train"]["epochs"]
    return int(state["step"]), bool(state["epoch_done"]) and int(state["epoch"]) >= epochs - 1


def train_stage(config: Path, run: Path, val: Path, until: float | None, log: Path, extra: list[str]) -> None:
    """Train in chunks of at most CHUNK_STEPS[run.name] steps until the schedule ends or the deadline passes; a
    chunk is shortened to end near the deadline at the speed of the chunk before."""
    seconds_per_step = None
    while True:
        step, done = last_step(run)
        if done:
            print(f"{run.name}: schedule finished at step {step}", flush=True)
            return
        chunk = CHUNK_STEPS[run.name]
        if until is not None:
            left = until - time.time()
            if seconds_per_step is not None:
                chunk = min(chunk, int(left / seconds_per_step))
            if left <= 0 or chunk < 10:
                print(f"{run.name}: deadline reached at step {step}; keeping its best checkpoint", flush=True)
                return
        started = (run / "checkpoints" / "last.pt").exists()
        args = [
            "train",
            "--data",
            str(val),
            "--out",
            str(run),
            "--threads",
            "1",
            "--no-progress",
            "--max-steps",
            str(step + chunk),
        ]
        args += ["--resume"] if started else ["--config", str(config), *extra]
        t0 = time.time()
        p2m(*args, log=log)
        new_step, _ = last_step(run)
        if new_step == step and started:
            print(f"{run.name}: no progress at step {step}; stopping", flush=True)
            return
        seconds_per_step = (time.time() - t0) / max(1, new_step - step)


def evaluate(run: Path, test: Path, log: Path) -> dict:
    out = {}
    for inp in ("gt", "noisy"):
        path = run / f"eval_test_{inp}.json"
        p2m(
            "eval",
            str(run),
            "--data",
            str(test),
            "--split",
            "test",
            "--input",
            inp,
            "--threads",
            "1",
            "--no-progress",
            "--out",
            str(path),
            log=log,
        )
        out[inp] = json.loads(path.read_text())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--out", type=Path, default=ROOT / "runs" / "release", help="work folder (runs, shards, logs)"
    )
    ap.add_argument("--stage1-until", help="HH:MM: stop stage 1 at this time (its best checkpoint is used)")
    ap.add_argument(
        "--stage2-until", help="HH:MM: stop stage 2 at this time (its best checkpoint starts stage 3)"
    )
    ap.add_argument("--until", help="HH:MM: stop stage 3 at this time (its best checkpoint is shipped)")
    ap.add_argument("--no-ship", action="store_true", help="evaluate but do not write into p2m/data/models")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "train_release.log"
    os.environ.setdefault("PYTHONPATH", str(ROOT))
    t0 = time.time()
    val, test = make_data(out, log)
    s1, s2, s3 = out / "stage1", out / "stage2", out / "stage3"
    train_stage(STAGE1, s1, val, deadline(args.stage1_until), log, [])
    train_stage(STAGE2, s2, val, deadline(args.stage2_until), log, ["--init-posenet", str(s1)])
    train_stage(STAGE3, s3, val, deadline(args.until), log, ["--init", str(s2)])
    result = evaluate(s3, test, log)
    keys = ("mpjpe", "pa_mpjpe", "mpvpe", "edge_error", "normal_dev", "mrpe")
    print(json.dumps({k: {m: v.get(m) for m in keys} for k, v in result.items()}))
    if not args.no_ship:
        from p2m.pose2mesh.model_card import ship

        print(ship(s1, s3, result, hours=(time.time() - t0) / 3600, stages=(s2,)))


if __name__ == "__main__":
    main()
