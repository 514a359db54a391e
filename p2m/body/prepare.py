"""`python -m p2m.body.prepare`: build the anny caches p2m uses, once, then drop anny's large intermediates.

anny caches three files per configuration: ``load_data_*`` (about 560 MB, shared by a rig's topologies),
``build_model_data_*`` (10-216 MB) and ``build_compact_model_data_*`` (2-51 MB). Only the compact file is read
once it exists, so the other two are deleted after every configuration is built. Running it again is quick
(it only checks that the files are there).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from p2m.body.common import DEFAULT_RIG, TOPOLOGIES, resolve_topology

logger = logging.getLogger(__name__)

#: anny's intermediate cache files, not read once the compact file of a configuration exists.
INTERMEDIATE_PATTERNS = ("load_data_*.safetensors", "build_model_data_*.safetensors")


@dataclasses.dataclass
class PrepareResult:
    """What :func:`prepare` did.

    Attributes:
        built: the (rig, topology) configurations that were missing and got built.
        ready: every requested configuration, with its compact cache file.
        pruned: the intermediate files deleted.
        freed_bytes: their total size.
    """

    built: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    ready: dict[tuple[str, str], Path] = dataclasses.field(default_factory=dict)
    pruned: list[Path] = dataclasses.field(default_factory=list)
    freed_bytes: int = 0


def prune_intermediates(cache_root: Path) -> tuple[list[Path], int]:
    """Delete anny's ``load_data_*`` and ``build_model_data_*`` files under ``cache_root/v*/``.

    Returns:
        (deleted paths, bytes freed).
    """
    deleted: list[Path] = []
    freed = 0
    for folder in sorted(cache_root.glob("v*")):
        for pattern in INTERMEDIATE_PATTERNS:
            for path in sorted(folder.glob(pattern)):
                size = path.stat().st_size
                path.unlink(missing_ok=True)
                deleted.append(path)
                freed += size
    return deleted, freed


def prepare(
    rigs: Sequence[str] = (DEFAULT_RIG,),
    topologies: Sequence[str] = tuple(TOPOLOGIES),
    prune: bool = True,
) -> PrepareResult:
    """Make sure the anny cache and the joint regressors of every (rig, topology) exist, then prune.

    Args:
        rigs: anny rigs (default: ``cmu_mb``).
        topologies: p2m topology names or aliases (default: all five).
        prune: delete anny's intermediates once every compact file exists.

    Returns:
        A :class:`PrepareResult`.
    """
    from tqdm import tqdm

    from p2m.body.anny_model import BUILD_MESSAGE, AnnyBody, _build_lock, anny_cache_file, import_anny
    from p2m.body.regressors import read_cached_regressors

    import_anny()
    from anny.paths import get_anny_cache_path

    result = PrepareResult()
    configs = [(rig, resolve_topology(t).name) for rig in rigs for t in topologies]
    missing = [
        (rig, topo)
        for rig, topo in configs
        if not anny_cache_file(rig, topo).exists()
        or read_cached_regressors(rig, topo, TOPOLOGIES[topo].num_vertices) is None
    ]
    if missing:
        logger.warning("%s", BUILD_MESSAGE)
        for rig, topo in tqdm(
            missing, desc="anny configurations", unit="config", disable=None, file=sys.stderr
        ):
            AnnyBody(rig=rig, topology=topo, skinning="torch")
            result.built.append((rig, topo))
    for rig, topo in configs:
        path = anny_cache_file(rig, topo)
        if not path.exists():  # anny changed its cache key: never prune then
            raise RuntimeError(f"anny built rig {rig!r} topology {topo!r} but {path} is missing")
        result.ready[(rig, topo)] = path
    if prune:
        with _build_lock():
            result.pruned, result.freed_bytes = prune_intermediates(Path(get_anny_cache_path()))
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m p2m.body.prepare [--rig R ...] [--topology T ...] [--keep-intermediates]``."""
    parser = argparse.ArgumentParser(prog="python -m p2m.body.prepare", description=__doc__.splitlines()[0])
    parser.add_argument("--rig", action="append", help=f"anny rig (repeatable; default {DEFAULT_RIG})")
    parser.add_argument(
        "--topology", action="append", help=f"topology (repeatable; default: {', '.join(TOPOLOGIES)})"
    )
    parser.add_argument(
        "--keep-intermediates", action="store_true", help="do not delete load_data_*/build_model_data_*"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("anny").setLevel(logging.WARNING)  # one "Loading cached model data" line per file
    result = prepare(
        rigs=args.rig or (DEFAULT_RIG,),
        topologies=args.topology or tuple(TOPOLOGIES),
        prune=not args.keep_intermediates,
    )
    logger.info(
        "anny body model cache ready: %d configurations (%d built now); pruned %d intermediate files (%.0f MB)",
        len(result.ready),
        len(result.built),
        len(result.pruned),
        result.freed_bytes / 1e6,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
