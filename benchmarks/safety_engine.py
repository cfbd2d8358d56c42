"""What the SafetyPolicy engine itself adds to a chat request, without the filters' own cost:
the same 300-character chat exchange through the in-process pipeline (``serving/pipeline.py``)
with no policy, and with a policy whose five filters (scope both) are detectors that find
nothing at once, so that what is measured is the engine: taking the texts out of the request
and the answer, screening, deciding, counting (checks, durations), the audit list and putting
nothing back.

    .venv/bin/python benchmarks/safety_engine.py [--rounds 20] [--requests 2000]

Rounds alternate between the two pipelines so drift on a shared machine hits both; the figure
is the median over rounds of each round's p50 difference (microseconds per request). Not a
test: nothing here asserts a time (STYLE.md habit 11).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from cutover.serving.adapters.base import Adapter
from cutover.serving.config import ServeConfig
from cutover.serving.loading import LoadedModel
from cutover.serving.metrics import ServingMetrics
from cutover.serving.pipeline import Admission, Pipeline
from cutover.serving.safety.base import Direction, FilterName, Finding
from cutover.serving.safety.guard import Guard
from cutover.serving.safety.policy import DIRECTIONS, FILTERS, Policy, Rule

USER = (
    "Hi, I have been comparing two running shoes for a half marathon in the spring and I cannot "
    "decide. One is lighter with a carbon plate, the other has more cushioning and a wider toe box. "
    "I run about forty kilometres a week, mostly on roads, and my knees ache after long runs. "
    "What should I look at?"
)[:300]
ANSWER = (
    "With knee aches after long runs, the cushioned shoe with the wider toe box is the safer pick "
    "for most of your training. Keep the carbon-plated pair for race day and a few tempo sessions "
    "so your legs get used to it. Replace either after roughly 600 to 800 kilometres of road use."
)[:300]


class Upstream(Adapter):
    """An llm model whose upstream answers at once."""

    platform: ClassVar[str] = "openai_chat"

    async def load(self) -> None:
        pass

    async def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    async def chat(self, request: Mapping[str, Any]) -> dict[str, Any]:
        message = {"role": "assistant", "content": ANSWER}
        return {"id": "c1", "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


@dataclass
class Nothing:
    """A detector that finds nothing, at once."""

    name: FilterName

    def scan(self, text: str, direction: Direction) -> list[Finding]:
        return []


def pipeline(with_policy: bool) -> Pipeline:
    metrics = ServingMetrics("bench", "assistant", "r1", lambda: 0)
    guard = None
    if with_policy:
        guard = Guard(metrics.safety, "bench", "assistant", "r1")
        rules = tuple(Rule(Nothing(name), "flag", DIRECTIONS["both"], ("x",)) for name in FILTERS)
        guard.apply(Policy("bench", "bench", 1, "u", rules, "blocked", True))
    config = ServeConfig(name="assistant", version="1", format="llm", revision="r1", namespace="bench")
    adapter = Upstream()
    return Pipeline(config, LoadedModel(adapter, [], []), metrics, Admission(1024), safety=guard)


async def p50(p: Pipeline, requests: int) -> float:
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": USER}]}

    async def read() -> Any:
        return body

    times = []
    for _ in range(requests):
        started = time.perf_counter()
        await p.chat(read, "req")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def main(rounds: int, requests: int) -> None:
    plain, screened = pipeline(False), pipeline(True)
    await p50(plain, 200), await p50(screened, 200)  # warm up
    differences, bases = [], []
    for _ in range(rounds):
        base = await p50(plain, requests)
        with_engine = await p50(screened, requests)
        bases.append(base)
        differences.append(with_engine - base)
    print(f"300-character chat exchange, {rounds} rounds x {requests} requests, five no-op filters (scope both)")
    print(f"  p50 without a policy:      {statistics.median(bases) * 1e6:8.1f} us")
    print(f"  added by the engine (p50): {statistics.median(differences) * 1e6:8.1f} us per request")
    print(f"  spread of the rounds:      {min(differences) * 1e6:.1f} .. {max(differences) * 1e6:.1f} us")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
