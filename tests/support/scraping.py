"""Reading a running exporter's /metrics over HTTP, and exposition text as samples keyed by name and labels.

``Samples`` keys are (name, frozenset of label pairs): for looking a sample up by its labels. For comparing
whole expositions with readable diffs, ``support.exposition.series_of`` keys by sorted label pairs instead.
"""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
# A scrape that gets no answer fails the test in seconds, not at the suite's timeout.
SCRAPE_TIMEOUT = aiohttp.ClientTimeout(total=10)


def samples_of(text: str) -> Samples:
    """Every sample of an exposition (text or OpenMetrics), by name and label set."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample with exactly these labels, None when there is none."""
    return samples.get((name, frozenset(labels.items())))


async def fetch_metrics(port: int, accept: str | None = None) -> tuple[int, str]:
    """(HTTP status, body) of ``/metrics`` on 127.0.0.1:``port``, asked for ``accept`` when given."""
    headers = {"Accept": accept} if accept else {}
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics", headers=headers, timeout=SCRAPE_TIMEOUT) as response,
    ):
        return response.status, await response.text()


async def scrape(port: int) -> tuple[int, Samples]:
    """(HTTP status, samples) of ``/metrics`` on 127.0.0.1:``port``."""
    status, text = await fetch_metrics(port)
    return status, samples_of(text)


async def scrape_text(port: int, accept: str | None = None) -> str:
    """The exposition a running exporter serves on ``port``; fails the test unless it answers 200."""
    status, text = await fetch_metrics(port, accept)
    assert status == 200, text
    return text
