"""URL normalisation, crawl scope and address checks: which URLs the crawler may fetch at all."""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

from w3lib.url import canonicalize_url, safe_url_string
from yarl import URL

DEFAULT_PORTS = {"http": 80, "https": 443}

# Second-level labels under which a registrable domain takes three labels (a short list, not the full PSL).
_MULTI_LABEL_SUFFIXES = {
    "co.uk",
    "org.uk",
    "ac.uk",
    "gov.uk",
    "me.uk",
    "ltd.uk",
    "plc.uk",
    "net.uk",
    "sch.uk",
    "com.au",
    "net.au",
    "org.au",
    "edu.au",
    "gov.au",
    "co.nz",
    "org.nz",
    "govt.nz",
    "ac.nz",
    "co.jp",
    "ne.jp",
    "or.jp",
    "ac.jp",
    "go.jp",
    "co.kr",
    "or.kr",
    "ac.kr",
    "com.br",
    "net.br",
    "org.br",
    "gov.br",
    "com.cn",
    "net.cn",
    "org.cn",
    "gov.cn",
    "edu.cn",
    "ac.cn",
    "com.tw",
    "org.tw",
    "edu.tw",
    "com.hk",
    "org.hk",
    "edu.hk",
    "co.in",
    "net.in",
    "org.in",
    "ac.in",
    "gov.in",
    "co.za",
    "org.za",
    "ac.za",
    "gov.za",
    "com.mx",
    "org.mx",
    "gob.mx",
    "com.ar",
    "org.ar",
    "gob.ar",
    "com.tr",
    "org.tr",
    "gov.tr",
    "edu.tr",
    "com.sg",
    "org.sg",
    "edu.sg",
    "gov.sg",
    "co.il",
    "org.il",
    "ac.il",
    "co.id",
    "or.id",
    "ac.id",
    "com.my",
    "org.my",
    "com.ph",
    "com.pk",
    "com.ua",
    "org.ua",
    "com.pl",
    "net.pl",
    "org.pl",
    "co.at",
    "or.at",
    "ac.at",
    "com.es",
    "org.es",
    "com.pt",
    "com.ru",
    "org.ru",
    "com.sa",
    "com.eg",
    "com.vn",
    "com.ng",
    "co.ke",
    "co.th",
    "ac.th",
    "in.th",
    "go.th",
    "github.io",
    "blogspot.com",
    "wordpress.com",
    "herokuapp.com",
    "netlify.app",
    "vercel.app",
    "pages.dev",
    "appspot.com",
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
    parsed = with_canonical_host(parsed)
    canon = canonicalize_url(str(parsed), keep_fragments=False)
    out = URL(canon)
    if out.explicit_port == DEFAULT_PORTS[out.scheme]:
        out = out.with_port(None)
    return str(out)


def host_key(url: str) -> str:
    """The politeness key ``scheme://host:port`` (explicit default port; IPv6 hosts keep their brackets).

    The key is also the origin whose ``/robots.txt`` is read, so it must stay a valid URL.
    """
    u = URL(url)
    host = canonical_host(u.raw_host or "")
    if ":" in host:
        host = f"[{host}]"
    return f"{u.scheme}://{host}:{u.port}"


def _ipv4_number(part: str) -> int | None:
    """One dot-separated part of a host as the WHATWG URL standard reads it (0x.. hex, 0.. octal), else None."""
    radix = 10
    if part[:2].lower() == "0x":
        radix, part = 16, part[2:]
    elif len(part) > 1 and part[0] == "0":
        radix, part = 8, part[1:]
    if part == "":
        return 0
    digits = "0123456789abcdef"[:radix]
    if any(ch not in digits for ch in part.lower()):
        return None
    return int(part, radix)


def whatwg_ipv4(host: str) -> str | None:
    """The dotted IPv4 address a browser connects to for ``host`` (``0x7f.1`` -> ``127.0.0.1``), or None for a name.

    Follows the WHATWG URL standard: a host whose last label is a number (decimal, ``0x`` hex or
    ``0`` octal) is an IPv4 address in one to four parts, the last part filling the remaining bytes.

    Raises:
        UrlError: the host ends in a number but is not a valid IPv4 address (browsers refuse it too).
    """
    parts = host.split(".")
    if len(parts) > 1 and parts[-1] == "":
        parts.pop()
    last = parts[-1]
    hex_number = last[:2].lower() == "0x" and _ipv4_number(last) is not None
    if not last.isascii() or not (last.isdigit() or hex_number):
        return None
    numbers = [_ipv4_number(p) if p else None for p in parts]
    if len(parts) > 4 or any(n is None for n in numbers):
        raise UrlError(f"host {host!r} ends in a number but is not a valid IPv4 address")
    *head, tail = numbers
    if any(n > 255 for n in head) or tail >= 256 ** (5 - len(numbers)):
        raise UrlError(
            f"host {host!r} ends in a number but is not a valid IPv4 address (a part is too large)"
        )
    value = tail + sum(n << (8 * (3 - i)) for i, n in enumerate(head))
    return str(ipaddress.IPv4Address(value))


@functools.lru_cache(maxsize=8192)
def canonical_host(host: str) -> str:
    """``host`` lower-cased, legacy numeric IPv4 forms (``2130706433``, ``0177.0.0.1``, ``127.1``) made dotted,
    IPv6 compressed and without brackets, so that scope, politeness and address checks all see one form.

    Raises:
        UrlError: a host that ends in a number but is no valid IPv4 address.
    """
    host = host.strip().lower()
    if host.startswith("[") or ":" in host:
        try:
            return str(ipaddress.IPv6Address(host.strip("[]").split("%", 1)[0]))
        except ValueError as exc:
            raise UrlError(f"invalid IPv6 host {host!r}") from exc
    return whatwg_ipv4(host) or host


def with_canonical_host(url: URL) -> URL:
    """``url`` with its host replaced by :func:`canonical_host` (unchanged when already canonical)."""
    raw = url.raw_host or ""
    host = canonical_host(raw)
    if host == raw or ":" in host:
        return url
    return url.with_host(host)


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


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
# Not globally reachable per the IANA registries, but ``is_global`` in older Pythons misses them.
_NOT_GLOBAL = (ipaddress.IPv4Network("192.0.0.0/24"), ipaddress.IPv6Network("64:ff9b:1::/48"))
_GLOBAL_EXCEPTIONS = (ipaddress.IPv4Address("192.0.0.9"), ipaddress.IPv4Address("192.0.0.10"))


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that an IPv6 address carries (``::ffff:a.b.c.d``, 6to4 ``2002::/16``, NAT64
    ``64:ff9b::/96``), or None; packets to such an address end up at the IPv4 one."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def blocked_address_reason(address: str, allow_loopback: bool = False) -> str | None:
    """Why connecting to IP ``address`` is refused without ``allow_private``, or None when it is public.

    Every address that is not globally routable is refused (private, loopback, link-local,
    shared 100.64.0.0/10, reserved, documentation...), and multicast. IPv4 carried inside IPv6
    (mapped, 6to4, NAT64) is unwrapped first and judged as IPv4.

    Args:
        address: an IPv4 or IPv6 address (brackets and a zone are allowed).
        allow_loopback: let loopback addresses through (tests and local servers) but nothing else.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0].strip("[]"))
    except ValueError:
        return f"unparseable address {address!r}"
    inner = embedded_ipv4(ip)
    shown = f"{address} (which carries {inner})" if inner is not None else address
    if inner is not None:
        ip = inner
    if allow_loopback and ip.is_loopback:
        return None
    for attr, label in (
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_unspecified", "unspecified"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    ):
        if getattr(ip, attr):
            return f"{shown} is {'an' if label[0] in 'aeiou' else 'a'} {label} address"
    if ip.version == 4 and ip in _SHARED:
        return f"{shown} is a shared (carrier-grade NAT) address"
    extra = any(ip.version == n.version and ip in n for n in _NOT_GLOBAL) and ip not in _GLOBAL_EXCEPTIONS
    if extra or not ip.is_global:
        return f"{shown} is not a globally routable address"
    return None


class Scope:
    """Which URLs are in the crawl: same registrable domain as a seed, allowed domains, minus deny patterns.

    Args:
        seeds: seed URLs; their registrable domains are in scope.
        allow_domains: more domains (a domain includes its subdomains).
        deny: regular expressions; a URL matching any of them is out of scope.
    """

    def __init__(
        self, seeds: Iterable[str], allow_domains: Iterable[str] = (), deny: Iterable[str] = ()
    ) -> None:
        self.domains: set[str] = set()
        for s in seeds:
            host = _host_of(s)
            if host:
                self.domains.add(registrable_domain(host))
        self.allowed = {d.lower().strip(".") for d in allow_domains if d.strip(".")}
        self.deny = []
        for pattern in deny:
            try:
                self.deny.append(re.compile(pattern))
            except re.error as exc:
                raise UrlError(
                    f"--deny pattern {pattern!r} is not a valid regular expression: {exc}"
                ) from exc

    def why_out(self, url: str) -> str | None:
        """None when ``url`` is in scope, else a one-line reason."""
        for pattern in self.deny:
            if pattern.search(url):
                return f"matches --deny {pattern.pattern!r}"
        host = _host_of(url)
        if registrable_domain(host) in self.domains:
            return None
        for d in self.allowed:
            if host == d or host.endswith("." + d):
                return None
        return f"host {host} is outside the crawl's domains"


def _host_of(url: str) -> str:
    """The canonical host of ``url`` ('' when it has none or it cannot be read)."""
    try:
        return canonical_host(URL(url).raw_host or "")
    except (UrlError, ValueError):
        return ""


def skip_scheme(raw: str) -> bool:
    """True for link targets that are never fetched (data:, javascript:, mailto:, fragments...)."""
    return raw.strip().lower().startswith(_SKIP_SCHEMES)
