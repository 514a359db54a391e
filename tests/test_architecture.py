"""The allowed import directions between p2m's stages (docs/architecture.md), checked on every module's source.

Each module's imports (top level and inside functions, relative ones resolved) are read with ``ast``; an import
of another unit that the table below does not allow fails the test with the file, the line and the rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "p2m"

#: Core modules: every stage may import them; they import only each other ("p2m" is the package itself).
CORE = ("p2m", "joints", "camera", "layout", "body", "io", "errors", "paths", "native", "pose_formats")
#: unit -> the units it may import besides itself. A unit is a top-level module or folder of p2m/.
ALLOWED: dict[str, tuple[str, ...]] = {
    **{core: CORE for core in CORE},
    "render": CORE,
    "export": (*CORE, "render"),
    "crawler": CORE,
    "annotate": (*CORE, "render"),  # synth renders its people
    "shards": CORE,  # shards know no model
    "pose2mesh": (*CORE, "shards"),  # the trainer streams through the shard reader; no infer, export, render
    "infer": (*CORE, "pose2mesh", "export", "render"),
    "scale": (*CORE, "crawler", "annotate", "shards"),  # --ray: runs a stage's own functions on a cluster
    "demo": (
        *CORE,
        "render",
        "crawler",
        "annotate",
        "shards",
        "pose2mesh",
        "infer",
        "scale",
    ),  # runs every stage
    "cli": (
        *CORE,
        "crawler",
        "annotate",
        "shards",
        "pose2mesh",
        "infer",
        "scale",
        "demo",
    ),  # no stage imports cli
    "__main__": ("cli",),
}
#: Modules that must load without torch (the crawler path and ``p2m --help``), checked in a fresh interpreter.
TORCH_FREE = ("p2m.crawler", "p2m.cli", "p2m.cli.crawl")


def unit_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    if rel.parts == ("__init__.py",):
        return "p2m"
    return rel.parts[0].removesuffix(".py")


def module_name(path: Path) -> str:
    parts = ["p2m", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def p2m_imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of every p2m module or name ``path`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(line, name) for line, name in out if name == "p2m" or name.startswith("p2m.")]


def target_unit(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "p2m"


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of_file(path)
        if unit not in ALLOWED:
            found.append(
                f"{path.relative_to(PACKAGE.parent)}: unit {unit!r} is not in the table of allowed imports"
            )
            continue
        for line, name in p2m_imports(path):
            target = target_unit(name)
            if target != unit and target not in ALLOWED[unit]:
                found.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}: {unit} may import only "
                    f"{', '.join(ALLOWED[unit])}"
                )
    return found


def test_imports_follow_the_allowed_directions():
    bad = violations()
    assert not bad, "imports against docs/architecture.md:\n" + "\n".join(bad)


def test_every_package_folder_and_module_is_classified():
    units = {unit_of_file(p) for p in PACKAGE.rglob("*.py")}
    assert units <= set(ALLOWED), sorted(units - set(ALLOWED))


@pytest.mark.parametrize(
    ("source", "rule"),
    [
        ("from p2m.render import render_mesh\n", "pose2mesh"),
        ("def f():\n    from p2m.infer import infer\n", "pose2mesh"),
        ("from p2m.cli import main\n", "shards"),
        ("from ..pose2mesh import model\n", "shards"),
    ],
)
def test_the_checker_sees_imports_against_the_rules(tmp_path, source, rule, monkeypatch):
    """A planted module that breaks a rule is reported (top-level, in a function, relative)."""
    fake = tmp_path / "p2m"
    (fake / rule).mkdir(parents=True)
    (fake / rule / "planted.py").write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    bad = violations()
    assert (
        len(bad) == 1 and bad[0].startswith(f"p2m/{rule}/planted.py:") and f"{rule} may import only" in bad[0]
    )


def test_the_crawler_path_and_the_cli_load_without_torch():
    code = (
        "import importlib, pkgutil, sys\n"
        "import p2m.crawler\n"
        "for m in pkgutil.walk_packages(p2m.crawler.__path__, 'p2m.crawler.'):\n"
        "    importlib.import_module(m.name)\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"torch loaded on the crawler path: {proc.stdout.strip()[:300]}"
