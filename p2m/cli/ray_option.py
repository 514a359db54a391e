"""The ``--ray [ADDRESS]`` option of the data stages (Ray itself is imported only when it is given)."""

from __future__ import annotations

import click

RAY_HELP = (
    "Run on Ray (pip install 'p2m[ray]'): alone, start Ray on this machine; with an ADDRESS ('auto', "
    "'ray://HOST:10001' or 'HOST:6379'), join that cluster. Put it last or write --ray=ADDRESS."
)


def ray_option(func):
    """Add ``--ray [ADDRESS]`` as the keyword ``ray_address`` (None: no Ray; ``"local"``: a local Ray)."""
    return click.option(
        "--ray",
        "ray_address",
        is_flag=False,
        flag_value="local",
        default=None,
        metavar="[ADDRESS]",
        help=RAY_HELP,
    )(func)
