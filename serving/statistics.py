"""Triton's statistics extension: cumulative counts and durations of the inference path, by stage,
answered at ``GET /v2/models/{name}[/versions/{version}]/stats`` and ``GET /v2/models/stats``
so perf_analyzer prints a server-side breakdown beside its client-side latency.

The stages are Triton's, measured with ``time.perf_counter_ns`` (a handful of clock reads per
request, no lock: the event loop is the only writer):

==============  ==========================================================================
success, fail   admitted requests answered, or ended by an error (any status), and their
                whole time in the pipeline (reading the body to encoding the answer)
queue           waiting in the dynamic batcher for the batch to start (admission never waits:
                it sheds)
compute_input   reading and decoding the request and validating its tensors
compute_infer   the model run (with batching, the run of the batch the request was in)
compute_output  classification and encoding the answer
cache_hit       with a prediction cache (``serving/cache.py``), requests answered from it (or
                from an identical request's model call in flight) and the time that took;
                they have no queue or compute_infer
cache_miss      requests the cache did not have, and the time the cache added (looking up
                and keeping the answer; the model's time is in compute_infer)
==============  ==========================================================================

What lies between (safety filters, out-of-distribution scoring, the fallback chain) is in
success but in no stage: perf_analyzer shows it as "overhead". ``inference_count`` counts the
rows answered, ``execution_count`` the model runs (a batch of several requests runs once), and
``batch_stats`` the model runs by batch size. cutover decodes and encodes per request, not per
batch, so the per-batch ``compute_input`` and ``compute_output`` are counted with zero time;
the per-request ones above hold that time.

Source: Triton's ``docs/protocol/extension_statistics.md`` (the JSON shape).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass
class Duration:
    """A cumulative count and its total time, in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class RequestTimes:
    """One request's time in each stage, in nanoseconds, filled in as it goes; ``started`` is
    when it was admitted (``time.perf_counter_ns``), ``rows`` how many rows it was answered for."""

    started: int = 0
    queue: int = 0
    compute_input: int = 0
    compute_infer: int = 0
    compute_output: int = 0
    rows: int = 0
    cache: str | None = None
    """"hit" or "miss" when a prediction cache was asked; None otherwise."""
    cache_ns: int = 0

    def cached(self, lookup: str, ns: int) -> None:
        """What the prediction cache answered (``serving/cache.py``'s lookup: hit, coalesced,
        miss or bypass) after ``ns`` nanoseconds, the queue and model time included."""
        if lookup in ("hit", "coalesced"):
            self.cache, self.cache_ns = "hit", ns
        elif lookup == "miss":
            self.cache, self.cache_ns = "miss", ns - self.queue - self.compute_infer


@dataclass
class InferenceStatistics:
    """The statistics of the one model revision a server serves, since it started."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference: int = 0
    """Milliseconds since the epoch of the last answered request; 0 before the first."""
    batches: dict[int, Duration] = field(default_factory=dict)
    """Model runs and their time, by batch size (rows)."""

    def execution(self, rows: int, ns: int) -> None:
        """One model run over ``rows`` rows that took ``ns`` nanoseconds."""
        self.execution_count += 1
        runs = self.batches.get(rows)
        if runs is None:
            runs = self.batches[rows] = Duration()
        runs.add(ns)

    def request(self) -> TimedRequest:
        """Time one admitted request: ``with statistics.request() as times:``, the block fills the
        ``RequestTimes`` it is given; when it ends, the request counts as a success with its
        stages, or, if it raised, as a failure."""
        return TimedRequest(self)

    def answered(self, times: RequestTimes) -> None:
        """One request answered: its whole time since ``times.started``, and its stages."""
        self.success.add(time.perf_counter_ns() - times.started)
        self.compute_input.add(times.compute_input)
        self.compute_output.add(times.compute_output)
        if times.cache == "hit":
            self.cache_hit.add(times.cache_ns)
        else:
            self.queue.add(times.queue)
            self.compute_infer.add(times.compute_infer)
            if times.cache == "miss":
                self.cache_miss.add(times.cache_ns)
        self.inference_count += times.rows
        self.last_inference = time.time_ns() // 1_000_000

    def json(self, name: str, version: str) -> dict[str, Any]:
        """One ``model_stats`` entry, in Triton's JSON shape."""
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.json(),
                "fail": self.fail.json(),
                "queue": self.queue.json(),
                "compute_input": self.compute_input.json(),
                "compute_infer": self.compute_infer.json(),
                "compute_output": self.compute_output.json(),
                "cache_hit": self.cache_hit.json(),
                "cache_miss": self.cache_miss.json(),
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": runs.count, "ns": 0},
                    "compute_infer": runs.json(),
                    "compute_output": {"count": runs.count, "ns": 0},
                }
                for size, runs in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }


class TimedRequest:
    """``InferenceStatistics.request()``'s context manager (a class: a generator-based one costs
    a few microseconds more per request, which a small model's answer notices)."""

    __slots__ = ("statistics", "times")

    def __init__(self, statistics: InferenceStatistics) -> None:
        self.statistics = statistics
        self.times = RequestTimes()

    def __enter__(self) -> RequestTimes:
        self.times.started = time.perf_counter_ns()
        return self.times

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if kind is None:
            self.statistics.answered(self.times)
        else:
            self.statistics.fail.add(time.perf_counter_ns() - self.times.started)
