"""URL normalisation, crawl scope and address checks: which URLs the crawler may fetch at all."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from w3lib.url import canonicalize_url, safe_url_string
from yarl import URL

DEFAULT_PORTS = {"http": 80, "https": 443}

# Second-level labels under which a registrable domain takes three labels (a short list, not the full PSL).
_MULTI_LABEL_SUFFIXES = {
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk", "sch.uk",
    "com.au", "net.au", "org.au", "edu.au", "gov.au", "co.nz", "org.nz", "govt.nz", "ac.nz",
    "co.jp", "ne.jp", "or.jp", "ac.jp", "go.jp", "co.kr", "or.kr", "ac.kr", "com.br", "net.br", "org.br",
    "gov.br", "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "ac.cn", "com.tw", "org.tw", "edu.tw",
    "com.hk", "org.hk", "edu.hk", "co.in", "net.in", "org.in", "ac.in", "gov.in", "co.za", "org.za",
    "ac.za", "gov.za", "com.mx", "org.mx", "gob.mx", "com.ar", "org.ar", "gob.ar", "com.tr", "org.tr",
    "gov.tr", "edu.tr", "com.sg", "org.sg", "edu.sg", "gov.sg", "co.il", "org.il", "ac.il", "co.id",
    "or.id", "ac.id", "com.my", "org.my", "com.ph", "com.pk", "com.ua", "org.ua", "com.pl", "net.pl",
    "org.pl", "co.at", "or.at", "ac.at", "com.es", "org.es", "com.pt", "com.ru", "org.ru", "com.sa",
    "com.eg", "com.vn", "com.ng", "co.ke", "co.th", "ac.th", "in.th", "go.th", "github.io", "blogspot.com",
    "wordpress.com", "herokuapp.com", "netlify.app", "vercel.app", "pages.dev", "appspot.com",
}

_SKIP_SCHEMES = ("data:", "javascript:", "mailto:", "tel:", "about:", "blob:", "ftp:", "file:", "#")


class UrlError(ValueError):
    """A string that cannot be crawled as an http(s) URL."""


def normalize_url(url: str) -> str:
    """The canonical form used for de-duplication and as the journal key.

    Lower-cases scheme and host, drops the default port and the fragment, percent-encodes
    unsafe characters and sorts the query (``w3lib.url.canonicalize_url``).

    Raises:
        UrlError: not an absolute http or https URL with a host.
    """
    url = url.strip()
    try:
        parsed = URL(safe_url_string(url))
    except (ValueError, TypeError) as exc:
        raise UrlError(f"not a valid URL: {url!r}") from exc
    if parsed.scheme not in DEFAULT_PORTS:
        raise UrlError(f"unsupported scheme {parsed.scheme or '(none)'!r} in {url!r}: only http and https")
    if not parsed.host:
        raise UrlError(f"no host in {url!r}")
    canon = canonicalize_url(str(parsed), keep_fragments=False)
    out = URL(canon)
    if out.explicit_port == DEFAULT_PORTS[out.scheme]:
        out = out.with_port(None)
    return str(out)


def host_key(url: str) -> str:
    """The politeness key ``scheme://host:port`` (explicit default port) of ``url``."""
    u = URL(url)
    return f"{u.scheme}://{u.host}:{u.port}"


def is_ip_literal(host: str) -> bool:
    """True when ``host`` is an IPv4 or IPv6 address rather than a name."""
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def registrable_domain(host: str) -> str:
    """The registrable domain of ``host`` (``www.news.bbc.co.uk`` -> ``bbc.co.uk``).

    IP addresses and single-label hosts are their own domain. Uses a short built-in list of
    multi-label public suffixes, not the full Public Suffix List.
    """
    host = host.lower().rstrip(".")
    if is_ip_literal(host) or "." not in host:
        return host
    labels = host.split(".")
    if len(labels) >= 3 and ".".join(labels[-2:]) in _MULTI_LABEL_SUFFIXES:
        return ".".join(labels[-3:])
    return ".".join(labels[-2:])


def blocked_address_reason(address: str) -> str | None:
    """Why connecting to IP ``address`` is refused without ``allow_private``, or None when it is public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return f"unparseable address {address!r}"
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{address} is a {label} address"
    return None


class Scope:
    """Which URLs are in the crawl: same registrable domain as a seed, allowed domains, minus deny patterns.

    Args:
        seeds: seed URLs; their registrable domains are in scope.
        allow_domains: more domains (a domain includes its subdomains).
        deny: regular expressions; a URL matching any of them is out of scope.
    """

    def __init__(self, seeds: Iterable[str], allow_domains: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self.domains: set[str] = set()
        for s in seeds:
            host = URL(s).host
            if host:
                self.domains.add(registrable_domain(host))
        self.allowed = {d.lower().strip(".") for d in allow_domains if d.strip(".")}
        self.deny = []
        for pattern in deny:
            try:
                self.deny.append(re.compile(pattern))
            except re.error as exc:
                raise UrlError(f"--deny pattern {pattern!r} is not a valid regular expression: {exc}") from exc

    def add_seed(self, url: str) -> None:
        """Put the registrable domain of ``url`` in scope."""
        host = URL(url).host
        if host:
            self.domains.add(registrable_domain(host))

    def why_out(self, url: str) -> str | None:
        """None when ``url`` is in scope, else a one-line reason."""
        for pattern in self.deny:
            if pattern.search(url):
                return f"matches --deny {pattern.pattern!r}"
        host = (URL(url).host or "").lower()
        if registrable_domain(host) in self.domains:
            return None
        for d in self.allowed:
            if host == d or host.endswith("." + d):
                return None
        return f"host {host} is outside the crawl's domains"


def skip_scheme(raw: str) -> bool:
    """True for link targets that are never fetched (data:, javascript:, mailto:, fragments...)."""
    return raw.strip().lower().startswith(_SKIP_SCHEMES)
