"""The crawl's settings as one frozen dataclass, checked once with messages that name the bad value."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from p2m.errors import ConfigError

DEFAULT_USER_AGENT = "p2m-crawler/0.1 (+https://pypi.org/project/p2m/; images of people for pose research)"


@dataclass(frozen=True)
class CrawlConfig:
    """Every knob of a crawl. Times in seconds, sizes in bytes unless named ``_px``.

    Attributes:
        depth: how many links away from a seed pages are followed (0: only the seeds).
        max_pages: stop reading pages after this many (None: no limit).
        max_images: stop once this many images are stored (None: no limit).
        concurrency: requests in flight over all hosts.
        per_host: requests in flight per ``scheme://host:port``.
        delay: seconds between request starts on one host, randomised to 0.5-1.5x (raised to
            robots.txt's Crawl-delay, which is never undercut).
        max_crawl_delay: robots.txt Crawl-delay values above this are cut to it (with a warning).
        user_agent: sent with every request; its first token is matched against robots.txt.
        allow_private: fetch every address, also loopback, private, shared and link-local ones (off: the SSRF
            guard refuses every address that is not globally routable).
        allow_loopback: fetch loopback addresses (local test servers) but still refuse every other
            address that is not globally routable.
        allow_domains: domains in scope besides the seeds' registrable domains.
        deny: regular expressions; matching URLs are never fetched.
        images_any_domain: fetch images from any host (pages still stay in scope).
        follow_robots_sitemaps: read the ``Sitemap:`` lines of each robots.txt as seeds.
        min_size_px: smallest accepted image width and height.
        max_pixels: largest accepted width * height (checked before decoding).
        max_bytes: cap on raw and on decompressed bytes of one response.
        max_redirects: redirect hops followed from one URL.
        connect_timeout, read_timeout, total_timeout: per request.
        retries: extra attempts on connection errors, timeouts, 5xx and 429.
        backoff_base, backoff_max: exponential backoff with jitter: base * 2**attempt * U(0.5, 1.5), capped.
        max_retry_after: a Retry-After longer than this fails the URL instead of waiting.
        host_error_limit: after this many consecutive connection failures, a host's other URLs fail fast.
        x_robots_directives: ``X-Robots-Tag`` directives that make an image skipped.
        person_filter: ``none`` or ``mediapipe``.
        person_threshold: images scoring below it are rejected (with the mediapipe filter).
        phash_distance: Hamming distance for near-duplicate groups in the manifest.
        image_processes: decode and hash new images in this many child processes (0: in threads of the crawl
            process). Threads are the default: on the 2-core machine the benchmark ran on, 3,000 unique
            320x480 JPEGs crawled at 78-80 img/s with threads and 73 img/s with 2 processes, at half the
            memory (Pillow and the hash release the GIL, so threads already use both cores).
        manifest_every_s: rewrite manifest.parquet and stats.json this often during a crawl (0: only at the end).
        progress: show a tqdm bar on stderr.
    """

    depth: int = 2
    max_pages: int | None = None
    max_images: int | None = None
    concurrency: int = 32
    per_host: int = 2
    delay: float = 0.25
    max_crawl_delay: float = 30.0
    user_agent: str = DEFAULT_USER_AGENT
    allow_private: bool = False
    allow_loopback: bool = False
    allow_domains: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    images_any_domain: bool = False
    follow_robots_sitemaps: bool = False
    min_size_px: int = 64
    max_pixels: int = 40_000_000
    max_bytes: int = 16 * 1024 * 1024
    max_redirects: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 20.0
    total_timeout: float = 60.0
    retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 60.0
    max_retry_after: float = 600.0
    host_error_limit: int = 8
    x_robots_directives: tuple[str, ...] = ("noai", "noimageai", "noml", "noindex", "noimageindex")
    person_filter: str = "none"
    person_threshold: float = 0.5
    phash_distance: int = 6
    image_processes: int = 0
    manifest_every_s: float = 60.0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        def need(cond: bool, name: str, expected: str) -> None:
            if not cond:
                raise ConfigError(f"crawl option {name}={getattr(self, name)!r}: expected {expected}")

        need(self.depth >= 0, "depth", "an integer >= 0")
        need(self.max_pages is None or self.max_pages >= 0, "max_pages", "an integer >= 0 or None")
        need(self.max_images is None or self.max_images >= 0, "max_images", "an integer >= 0 or None")
        need(self.concurrency >= 1, "concurrency", "an integer >= 1")
        need(self.per_host >= 1, "per_host", "an integer >= 1")
        need(self.delay >= 0, "delay", "seconds >= 0")
        need(self.min_size_px >= 1, "min_size_px", "pixels >= 1")
        need(self.max_pixels >= 1, "max_pixels", "pixels >= 1")
        need(self.max_bytes >= 1024, "max_bytes", "bytes >= 1024")
        need(self.max_redirects >= 0, "max_redirects", "an integer >= 0")
        need(
            min(self.connect_timeout, self.read_timeout, self.total_timeout) > 0,
            "total_timeout",
            "positive timeouts",
        )
        need(self.retries >= 0, "retries", "an integer >= 0")
        need(self.person_filter in ("none", "mediapipe"), "person_filter", "one of none, mediapipe")
        need(0 <= self.person_threshold <= 1, "person_threshold", "a number in [0, 1]")
        need(0 <= self.phash_distance < 64, "phash_distance", "an integer in [0, 63]")
        need(bool(self.user_agent.strip()), "user_agent", "a non-empty string")

    @property
    def ua_token(self) -> str:
        """The product token of the User-Agent (``p2m-crawler``), matched against robots.txt groups."""
        return self.user_agent.split()[0].split("/")[0]

    @classmethod
    def from_options(cls, **options: Any) -> CrawlConfig:
        """Build from keyword options, rejecting unknown names (the message lists the valid ones).

        ``None`` means "the default", except for ``max_pages`` and ``max_images`` where it means no limit.
        """
        return cls().updated(**options)

    def updated(self, **options: Any) -> CrawlConfig:
        """A copy with ``options`` changed (same rules as :meth:`from_options`)."""
        names = {f.name for f in fields(self)} - {"extra"}
        unknown = sorted(set(options) - names)
        if unknown:
            raise ConfigError(
                f"unknown crawl option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        for key in ("allow_domains", "deny", "x_robots_directives"):
            if options.get(key) is not None:
                options[key] = tuple(options[key])
        changes = {k: v for k, v in options.items() if v is not None or k in ("max_pages", "max_images")}
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (saved in the journal and in stats.json)."""
        d = asdict(self)
        d.pop("extra")
        return d
