"""Run ``p2m ARGS`` in this process and SIGKILL it at a chosen point: the crash tests' fixture (p2m has no hook).

python tests/train/kill_driver.py after-step N -- train ...   # right after the checkpoint of step N is on disk
python tests/train/kill_driver.py during-save K -- train ...  # half-way through the K-th checkpoint file
"""

from __future__ import annotations

import os
import signal
import sys

from p2m.cli import main as cli
from p2m.pose2mesh import checkpoint as ckpt


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> None:
    mode, n, sep, *args = argv
    if sep != "--" or mode not in ("after-step", "during-save"):
        raise SystemExit(__doc__)
    n = int(n)
    if mode == "after-step":
        save = ckpt.save_checkpoint

        def save_then_die(run_dir, state, **kwargs):
            sizes = save(run_dir, state, **kwargs)
            if int(state["step"]) == n:
                _kill()
            return sizes

        ckpt.save_checkpoint = save_then_die
    else:
        write, files = ckpt._write_file, [0]

        def write_half_then_die(path, data, what):
            files[0] += 1
            if files[0] == n:
                view = memoryview(data)
                with ckpt.atomic_write(path, "wb") as fh:  # the temporary file is never renamed
                    fh.write(view[: len(view) // 2])
                    fh.flush()
                    os.fsync(fh.fileno())
                    _kill()
            write(path, data, what)

        ckpt._write_file = write_half_then_die
    cli.main(args=args, prog_name="p2m")


if __name__ == "__main__":
    main(sys.argv[1:])
