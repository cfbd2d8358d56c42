"""A metric provider that answers from tables the test fills in: per sample name, rows of
(labels, increment over the interval); per rendered PromQL query, an instant vector. It records
every selector and query it was asked.

A row is selected by its sample name and by the selector's equality matchers on the labels the
row names (rows leave out ``namespace`` and ``model``, which every selector matches), so a test
can tell a ``scope="output"`` read from one of every scope."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from cutover.analysis.provider import Labels

Row = tuple[dict[str, str], float]
_EQUALS = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"')
"""An equality matcher in a selector (``scope="output"``; ``revision=~"..."`` is not one)."""


@dataclass
class FakeProvider:
    series: dict[str, list[Row]] = field(default_factory=dict)
    vectors: dict[str, dict[Labels, float]] = field(default_factory=dict)
    selectors: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)

    async def increments(self, selector: str, by: Sequence[str], start: float, end: float) -> dict[Labels, float]:
        self.selectors.append(selector)
        out: dict[Labels, float] = defaultdict(float)
        wanted = dict(_EQUALS.findall(selector))
        for labels, value in self.series.get(selector.split("{", 1)[0], []):
            if any(labels.get(name, want) != want for name, want in wanted.items()):
                continue
            out[tuple((name, labels.get(name, "")) for name in by)] += value
        return dict(out)

    async def instant(self, query: str, at: float) -> dict[Labels, float]:
        self.queries.append(query)
        return dict(self.vectors.get(query, {}))

    def requests(self, source: str, revision: str, ok: float, errors: float = 0.0) -> None:
        rows = self.series.setdefault(f"cutover_{source}_requests_total", [])
        rows.append(({"revision": revision, "code": "200"}, ok))
        rows.append(({"revision": revision, "code": "503"}, errors))

    def counter(self, sample: str, revision: str, value: float) -> None:
        self.series.setdefault(sample, []).append(({"revision": revision}, value))

    def histogram(self, sample: str, revision: str, cumulative: dict[str, float]) -> None:
        rows = self.series.setdefault(sample, [])
        rows.extend(({"revision": revision, "le": le}, value) for le, value in cumulative.items())
