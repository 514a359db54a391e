"""The pure parts of p2m.scale: host ownership and range splitting (no Ray needed)."""

from __future__ import annotations

import json
import subprocess
import sys

from p2m.scale.common import split_range
from p2m.scale.crawl import owner


def test_split_range_covers_everything_once_in_order():
    for n, parts in ((1, 4), (10, 3), (7, 7), (100, 8), (5, 1)):
        ranges = split_range(n, parts)
        assert [i for a, b in ranges for i in range(a, b)] == list(range(n))
        assert len(ranges) == min(n, parts) and all(b > a for a, b in ranges)
        sizes = [b - a for a, b in ranges]
        assert max(sizes) - min(sizes) <= 1


def test_owner_is_per_host_and_port_and_the_same_in_every_process():
    urls = [f"http://127.0.0.1:{8000 + i}/page/{i}.html" for i in range(64)]
    here = [owner(u, 4) for u in urls]
    assert set(here) == {0, 1, 2, 3}  # 64 hosts spread over 4 actors
    assert owner("http://127.0.0.1:8003/other/path.jpg?x=1", 4) == here[3]  # the path does not matter
    assert owner("HTTP://127.0.0.1:8003/", 4) == here[3]
    assert owner("http://example.org/a", 3) == owner(
        "http://example.org:80/b", 3
    )  # default port made explicit
    code = "import sys, json; from p2m.scale.crawl import owner; print(json.dumps([owner(u, 4) for u in sys.argv[1:]]))"
    other = subprocess.run([sys.executable, "-c", code, *urls], capture_output=True, text=True, check=True)
    assert json.loads(other.stdout) == here
