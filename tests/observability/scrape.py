"""Scraping a process's /metrics and waiting for a series to reach a value."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families


class Samples:
    """One scrape: samples by name, each with its labels."""

    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, dict(sample.labels), sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def get(self, name: str, **labels: str) -> float | None:
        """Sum of the samples of `name` whose labels include `labels`; None when there is none."""
        values = [
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and labels.items() <= sample_labels.items()
        ]
        return sum(values) if values else None

    def value(self, name: str, **labels: str) -> float:
        """Like `get`, with an absent series read as 0 (a labelled counter has no sample before its first use)."""
        return self.get(name, **labels) or 0.0


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=5.0) as client:
        response = await client.get(url)
        response.raise_for_status()
        return Samples(response.text)


async def wait_for(url: str, condition: Callable[[Samples], bool], *, timeout: float = 15.0) -> Samples:
    """Scrape until `condition` holds; returns that scrape, or the last one (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(url)
        if condition(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.25)
