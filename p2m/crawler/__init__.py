"""p2m's image crawler: polite, resumable, and safe against hostile responses. Entry point: :func:`crawl`."""

from __future__ import annotations

from p2m.crawler.api import CrawlResult, crawl, read_seeds
from p2m.crawler.config import CrawlConfig

__all__ = ["CrawlConfig", "CrawlResult", "crawl", "read_seeds"]
