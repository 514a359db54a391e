"""`p2m crawl`: options -> one call to :func:`p2m.crawler.crawl` -> a summary table."""

from __future__ import annotations

import click

from p2m.cli.common import progress_option
from p2m.cli.ray_option import ray_option
from p2m.crawler.config import DEFAULT_USER_AGENT


def _positive(ctx: click.Context, param: click.Parameter, value):
    if value is not None and value < 0:
        raise click.BadParameter(f"{value!r} is negative; expected a number >= 0")
    return value


@click.command("crawl")
@click.argument("seeds", nargs=-1)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Crawl folder (created).")
@click.option("--resume", is_flag=True, help="Continue the crawl recorded in --out (seeds optional).")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="With --resume: fetch again only the URLs that failed (HTTP, network, size errors).",
)
@click.option(
    "--url-column",
    default="url",
    show_default=True,
    help="Column with the URLs in parquet/CSV/TSV seed files.",
)
@click.option(
    "--allow-private",
    is_flag=True,
    help="Allow every address: loopback, private, shared, link-local (by default the SSRF guard refuses "
    "every address that is not globally routable).",
)
@click.option(
    "--allow-loopback",
    is_flag=True,
    help="Allow loopback addresses only (a local test server); other non-global addresses stay refused.",
)
@click.option(
    "--allow-domain",
    "allow_domains",
    multiple=True,
    metavar="D",
    help="Also crawl domain D and its subdomains (repeatable).",
)
@click.option(
    "--deny", multiple=True, metavar="PATTERN", help="Never fetch URLs matching this regex (repeatable)."
)
@click.option("--images-any-domain", is_flag=True, help="Fetch images from any domain (pages stay in scope).")
@click.option(
    "--sitemaps-from-robots",
    "follow_robots_sitemaps",
    is_flag=True,
    help="Also read the sitemaps listed in each host's robots.txt.",
)
@click.option(
    "--depth",
    type=int,
    default=2,
    show_default=True,
    callback=_positive,
    help="Links followed away from a seed.",
)
@click.option("--max-pages", type=int, default=None, callback=_positive, help="Stop reading pages after N.")
@click.option(
    "--max-images", type=int, default=None, callback=_positive, help="Stop after N images are stored."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Requests in flight over all hosts.",
)
@click.option(
    "--per-host",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Requests in flight per host:port.",
)
@click.option(
    "--delay",
    type=float,
    default=0.25,
    show_default=True,
    callback=_positive,
    help="Seconds between requests to one host (x0.5-1.5 jitter; robots.txt Crawl-delay wins if longer).",
)
@click.option("--user-agent", default=DEFAULT_USER_AGENT, show_default=True, help="User-Agent header.")
@click.option(
    "--min-size",
    "min_size_px",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Smallest accepted image width and height, pixels.",
)
@click.option(
    "--max-pixels",
    type=click.IntRange(min=1),
    default=40_000_000,
    show_default=True,
    help="Largest accepted width*height (checked before decoding).",
)
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1024),
    default=16 * 1024 * 1024,
    show_default=True,
    help="Cap on one response, raw and decompressed.",
)
@click.option(
    "--timeout",
    "total_timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Total seconds per request.",
)
@click.option("--read-timeout", type=float, default=20.0, show_default=True, help="Seconds without data.")
@click.option(
    "--retries",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Extra attempts on 429, 5xx, timeouts and connection errors.",
)
@click.option(
    "--backoff",
    "backoff_base",
    type=float,
    default=1.0,
    show_default=True,
    help="First retry wait (doubles per attempt, jittered) when no Retry-After is given.",
)
@click.option(
    "--person-filter",
    type=click.Choice(["none", "mediapipe"]),
    default="none",
    show_default=True,
    help="Keep only images where MediaPipe Pose finds a person (needs the 'detect' extra).",
)
@click.option(
    "--person-threshold",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Minimum person score with --person-filter mediapipe.",
)
@click.option(
    "--image-processes",
    type=click.IntRange(min=0),
    default=None,
    help="Decode and hash new images in this many worker processes [default: 0, threads of the crawl "
    "process, measured faster on 2 cores].",
)
@progress_option
@ray_option
@click.option(
    "--actors",
    type=click.IntRange(min=1),
    default=None,
    help="With --ray: crawler actors, hosts split among them [default: one per CPU of the cluster].",
)
def command(
    seeds: tuple[str, ...],
    out: str,
    resume: bool,
    retry_failed: bool,
    url_column: str,
    progress: bool | None,
    ray_address: str | None,
    actors: int | None,
    **options,
) -> None:
    """Harvest images from SEED pages, sitemaps (.xml, .xml.gz, indexes), RSS/Atom feeds or files of URLs
    (text, one per line, or the --url-column of a parquet/CSV/TSV file).

    Polite (robots.txt, Crawl-delay, per-host limits, Retry-After) and resumable: after a crash or
    Ctrl-C, run the same command with --resume. Writes OUT/images/, OUT/manifest.parquet and
    OUT/stats.json.
    """
    from p2m.crawler import crawl

    if ray_address is not None:
        from p2m.crawler import read_seeds
        from p2m.scale.crawl import crawl as ray_crawl

        if retry_failed:
            raise click.BadParameter("is not supported with --ray yet", param_hint="--retry-failed")
        urls = read_seeds(list(seeds), url_column)  # the actors read plain URLs
        result = ray_crawl(urls, out, resume=resume, actors=actors, address=ray_address, **options)
    elif actors is not None:
        raise click.BadParameter("needs --ray", param_hint="--actors")
    else:
        result = crawl(
            list(seeds),
            out,
            resume=resume,
            retry_failed=retry_failed,
            url_column=url_column,
            progress=progress is not False,
            **options,
        )
    counters = result.stats["counters"]
    totals = result.totals
    rows = [
        ("finish reason", result.finish_reason),
        ("elapsed", f"{result.elapsed_s:.1f} s"),
        ("requests", counters.get("fetch/requests", 0)),
        ("pages read", counters.get("page/parsed", 0)),
        ("images stored (this run)", counters.get("image/stored", 0)),
        ("images/s (this run)", f"{counters.get('image/stored', 0) / max(result.elapsed_s, 1e-9):.1f}"),
        ("exact duplicates", counters.get("image/duplicate", 0)),
        ("rejected images", sum(v for k, v in counters.items() if k.startswith("image/rejected/"))),
        ("failed URLs", counters.get("url/failed", 0)),
        ("skipped (robots/X-Robots-Tag/scope)", counters.get("url/skipped", 0)),
        ("retries", sum(v for k, v in counters.items() if k.startswith("fetch/retry/"))),
        ("images stored (all runs)", result.images_stored),
        ("still queued", totals.get("queued", 0)),
    ]
    width = max(len(k) for k, _ in rows)
    click.echo(f"p2m crawl -> {result.out}")
    for key, value in rows:
        click.echo(f"  {key:<{width}}  {value}")
    errors = result.stats.get("error_messages", {})
    if errors:
        click.echo("  most frequent errors:")
        for message, count in list(errors.items())[:5]:
            click.echo(f"    {count:>6}  {message}")
    click.echo(f"  manifest: {result.manifest}")
