"""Session fixture of the trainer tests: a small synthetic shard set (anny body model, 369-vertex mesh)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import one_thread


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 synthetic people (joint-range sampler poses, 4 subjects x 4 cameras): train = S1-S3 in 3 shards of 60,
    test = S4 (60 samples)."""
    from p2m.paths import configure_third_party_caches

    configure_third_party_caches()
    from p2m.errors import BodyModelError

    try:
        from p2m.annotate.synth import SynthOptions, synth
    except ImportError as exc:  # pragma: no cover
        pytest.skip(f"p2m synth unavailable: {exc}")
    from p2m.shards import build_shards

    base = tmp_path_factory.mktemp("train-data")
    try:
        with one_thread():
            synth(
                base / "ds",
                SynthOptions(num=240, poses="sampler", subjects=4, topology="notoes_collapse3pc", seed=7),
                progress=False,
            )
    except BodyModelError as exc:  # pragma: no cover - no anny cache
        pytest.skip(f"anny body model unavailable: {exc}")
    build_shards(
        [base / "ds"],
        base / "shards",
        splits={"train": "S1,S2,S3", "test": "S4"},
        maxcount=60,
        progress=False,
    )
    return base / "shards"


@pytest.fixture(scope="session")
def tiny_run(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A finished 2-epoch run of the tiny config (22 steps), and train()'s result."""
    from p2m.pose2mesh.train import train

    from .helpers import tiny_config

    run = tmp_path_factory.mktemp("runs") / "tiny"
    with one_thread():
        result = train(tiny_config(), run, shards, device="cpu", progress=False)
    return run, result


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread while a trainer test runs: steady step times on shared CPUs (restored afterwards)."""
    with one_thread():
        yield
