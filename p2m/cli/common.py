"""Options every `p2m` command shares, so that they are spelled, defaulted and documented the same way.

``-v``/``-q`` work on the group and on every subcommand (``p2m -v train`` and ``p2m train -v`` alike);
``--progress/--no-progress`` defaults to "only on a terminal"; ``--device`` takes auto, cpu, cuda or cuda:N;
``--batch-size`` is the one spelling of a batch option (``--batch`` stays as a hidden, deprecated alias).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: Key of the verbosity in the root context's ``meta``: -1 quiet, 0 default (warnings), 1 info, 2 debug.
VERBOSITY = "p2m.verbosity"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Loggers of other projects that stay at WARNING unless -vv: their INFO lines are not about the user's data.
THIRD_PARTY = ("anny", "absl", "urllib3", "PIL", "matplotlib", "h5py")


def configure_logging(verbosity: int) -> None:
    """Handlers are set up here only; modules use ``logging.getLogger(__name__)``.

    Args:
        verbosity: -1 errors only, 0 warnings (the default: each command prints its own summary line), 1 info
            from p2m, 2 debug from everything.
    """
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root.addHandler(handler)
    root.setLevel(level)
    for name in THIRD_PARTY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity >= 2 else max(level, logging.WARNING))


def verbosity(ctx: click.Context) -> int:
    """The verbosity set by -v/-q on the group and the subcommands of this invocation."""
    return int(ctx.find_root().meta.get(VERBOSITY, 0))


def _verbose_cb(ctx: click.Context, param: click.Parameter, value: int) -> None:
    if value:
        root = ctx.find_root()
        root.meta[VERBOSITY] = max(0, int(root.meta.get(VERBOSITY, 0))) + value
        configure_logging(root.meta[VERBOSITY])


def _quiet_cb(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta[VERBOSITY] = -1
        configure_logging(-1)


_VERBOSITY_SPECS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-v", "--verbose"), {"count": True, "callback": _verbose_cb,
                           "help": "More log output: -v info, -vv debug (also other libraries')."}),
    (("-q", "--quiet"), {"is_flag": True, "callback": _quiet_cb,
                         "help": "Errors and the summary line only (no warnings)."}),
)  # fmt: skip


def verbosity_params() -> list[click.Option]:
    """Fresh ``-v/--verbose`` (repeatable) and ``-q/--quiet`` options; they take effect as soon as parsed."""
    return [
        click.Option(list(decls), expose_value=False, is_eager=True, **kw) for decls, kw in _VERBOSITY_SPECS
    ]


def verbosity_options(f: F) -> F:
    """Decorator form of :func:`verbosity_params` (for the group)."""
    for decls, kw in reversed(_VERBOSITY_SPECS):
        f = click.option(*decls, expose_value=False, is_eager=True, **kw)(f)
    return f


def add_verbosity(cmd: click.Command) -> click.Command:
    """Give ``cmd`` and every subcommand under it ``-v``/``-q`` (once), so they work after any command name."""
    if not any(p.name in ("verbose", "quiet") for p in cmd.params):
        cmd.params.extend(verbosity_params())
    if isinstance(cmd, click.Group):
        for sub in cmd.commands.values():
            add_verbosity(sub)
    return cmd


def progress_option(f: F) -> F:
    """``--progress/--no-progress``: None (the default) draws bars only when stderr is a terminal."""
    return click.option(
        "--progress/--no-progress",
        default=None,
        help="Progress bars on stderr  [default: only on a terminal]",
    )(f)


def progress_enabled(progress: bool | None) -> bool:
    """Resolve ``--progress``'s default now (before stderr may be redirected): on when stderr is a terminal."""
    if progress is not None:
        return progress
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceType(click.ParamType):
    """auto (CUDA when present, else CPU), cpu, cuda or cuda:N."""

    name = "device"

    def get_metavar(self, param: click.Parameter, *args: Any, **kwargs: Any) -> str:
        return "[auto|cpu|cuda[:N]]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip().lower()
        if not _DEVICE.match(text):
            self.fail(f"{value!r}: expected auto, cpu, cuda or cuda:N", param, ctx)
        return text


DEVICE_HELP = "Device: auto (CUDA when present, else CPU), cpu, cuda or cuda:N."


def device_option(help: str = DEVICE_HELP) -> Callable[[F], F]:
    """``--device [auto|cpu|cuda[:N]]``, default auto, the same on every command."""
    return click.option("--device", type=DeviceType(), default="auto", show_default=True, help=help)


class _AliasOption(click.Option):
    """An option whose deprecated spellings work but are not shown in ``--help``."""

    def __init__(self, *args: Any, hidden_aliases: tuple[str, ...] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hidden_aliases = hidden_aliases

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        saved = self.opts
        self.opts = [o for o in self.opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = saved


def batch_size_option(default: int, help: str) -> Callable[[F], F]:
    """``--batch-size N`` (``--batch`` is accepted as a hidden, deprecated alias)."""
    return click.option(
        "--batch-size",
        "--batch",
        "batch_size",
        cls=_AliasOption,
        hidden_aliases=("--batch",),
        type=click.IntRange(min=1),
        default=default,
        show_default=True,
        help=help,
    )


def check_split(data: str, split: str, what: str = "--split") -> dict[str, Any]:
    """:func:`p2m.shards.index.require_split`: torch-free, so commands call it before loading a model."""
    from p2m.shards.index import require_split

    return require_split(data, split, what)
