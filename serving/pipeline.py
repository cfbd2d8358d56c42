"""The request path of ``cutover serve``, free of HTTP: plain values in, plain values out, each
failure a named error of ``serving/errors.py`` that knows its status. ``serving/server.py``
only routes a request here and turns the answer into a response.

An inference request (Open Inference Protocol v2)::

    read → admit → policy → decode → validate → safety (inputs) → input filters
          → out-of-distribution score → (prediction cache) → predict → confidence → fallback
          → output filters → safety (outputs) → encode → audit

A chat completion (an ``llm`` model)::

    admit → policy → read → check (serving/openai.py) → safety (request) → request filters
          → upstream → response filters → safety (response) → audit

A streamed chat completion (``stream: true``) is a :class:`ChatStream`::

    admit → policy → read → check → safety (request) → request filters → upstream opened
          → first chunk (all failures so far are HTTP errors) → chunks, each through the
            safety screening of the stream → audit (at the end, with the assembled content)

Safety. With a SafetyPolicy (``serving/safety/guard.py``), the policy is taken once per request
(none applied: ``SafetyUnavailable``, 503, before the request is decoded, and for chat before its
body is read) and screens the request's texts before anything else sees them and the answer's texts
last, after any fallback, so the client never gets what it did not check. A refusal
(``SafetyBlocked`` or ``CrisisEscalated``, 422) is audited with its findings and status; an
escalated chat request is answered with the policy's crisis message without asking the upstream,
and counts no prediction. A streamed answer is screened as it goes (``Guard.chat_stream``): its
text is held back to the last complete sentence and each piece screened before it is released,
redacted in place, with one decision per request (the pieces' findings are counted together, once);
a block or escalation mid-stream ends the stream with a final chunk carrying the ``blockMessage``
(or the crisis message) and ``finish_reason: "content_filter"``. What this costs in time to the
first token is in ``serving/safety/stream.py`` and ``benchmarks/README.md``.

Errors after a stream has started cannot change its status (200 was sent with the first chunk):
the client hears them as an error event, and the request counts as the error's status (a
revision whose upstream breaks off mid-stream fails as it would have before the stream began),
as 422 when the SafetyPolicy blocked the answer, and as 499 when the client left first.

Admission sheds a request with ``Overloaded`` (503) when ``max_in_flight`` requests are in
progress; while the process drains, requests are still served (endpoints take a moment to drop
the pod, and the listener closes only after the shutdown delay).

Filters are hooks for checks of one's own (the SafetyPolicy screens through its guard, above);
none is built in. Each takes the plain value at its step and returns it, changed or not, or
raises a ``ServingError`` to refuse the request: input filters see the validated inputs (the
model, the out-of-distribution score and the fallback chain see what they return), output filters
the final outputs after any fallback; chat filters see the checked request and the upstream's
answer (a whole one: response filters do not see a stream's chunks). The audit record's input
digest is always over what the client sent.

Tracing: with ``tracing`` on, the stages are spans under the request's (decode, validate, safety,
queue, model, fallback, encode; ``serving/tracing.py``) and the audit record carries the trace id;
off, no OpenTelemetry code runs.

Metrics: rows answered by the primary model, their confidence, out-of-distribution scores and
the fallback link that answered are counted here; request counts and durations by status code
are counted where the status is known, in the HTTP layer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import aclosing, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .attribution_sampling import AttributionSampler
from .audit import input_digest, summarize_outputs
from .batching import QueueFull
from .classification import classified
from .config import ServeConfig
from .errors import (
    CrisisEscalated,
    InferenceError,
    InvalidInput,
    NotSupported,
    Overloaded,
    SafetyBlocked,
    ServingError,
    UpstreamError,
)
from .fallback import top1_confidence
from .loading import LoadedModel
from .metrics import ServingMetrics
from .offload import Offload
from .ood import ScorerError
from .openai import chat_request, chunks_of, reply_content, stop_chunk
from .protocol import InferRequest, decode_request, encode_response, tensor_bytes
from .safety.guard import Guard
from .safety.policy import Policy
from .statistics import RequestTimes
from .tracing import Tracing
from .validation import validate

log = logging.getLogger("cutover.serving")

Tensors = dict[str, np.ndarray]
TensorFilter = Callable[[Tensors], Awaitable[Tensors]]
"""A filter of inference inputs or outputs: named arrays in, named arrays out."""
ChatFilter = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""A filter of chat completion requests or responses (OpenAI-style JSON objects)."""
Answer = TypeVar("Answer")
"""An encoded inference response: ``Encoded`` over HTTP, a ``ModelInferResponse`` over gRPC."""
T = TypeVar("T")


@dataclass(frozen=True)
class Filters:
    """The request and response filters the pipeline runs, in order; none by default."""

    inputs: Sequence[TensorFilter] = ()
    outputs: Sequence[TensorFilter] = ()
    chat_requests: Sequence[ChatFilter] = ()
    chat_responses: Sequence[ChatFilter] = ()


@dataclass(frozen=True)
class Encoded:
    """An encoded inference response: the body, and the JSON header's length when a binary part
    follows it (the value of ``Inference-Header-Content-Length``), else None (all JSON)."""

    body: bytes
    header_length: int | None


class ChatStream:
    """A streamed chat completion (``stream: true``), started: its first chunk is in hand, so
    whatever could fail before the client heard anything has failed as an error with its status.
    Iterate for the chunks (OpenAI's ``chat.completion.chunk`` objects), then always ``aclose()``:
    that ends the upstream call, frees the admission slot and writes the audit record.

    A failure after the start raises its ``ServingError`` from the iteration; the client has a
    200 by then and hears it as an error event. ``status`` is what the request counts as once
    the stream ended (``cutover_serving_requests_total``'s code): 200; the status of the error
    that ended it (a 502 mid-stream counts against the revision as a 502 before the stream would
    have); 422 when the SafetyPolicy blocked the answer and ended the stream with its
    ``blockMessage`` (as a blocked whole answer counts); 499 when the client left first."""

    def __init__(self) -> None:
        self.status = 200
        self._first: dict[str, Any] | None = None
        self._rest: AsyncGenerator[dict[str, Any], None] | None = None

    async def start(self, chunks: AsyncGenerator[dict[str, Any], None]) -> None:
        """Take the first of ``chunks``, raising what fails before it."""
        self._rest = chunks
        try:
            self._first = await anext(chunks)
        except StopAsyncIteration:
            self._first = None

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        assert self._rest is not None
        if self._first is not None:
            yield self._first
        async for chunk in self._rest:
            yield chunk

    async def aclose(self) -> None:
        if self._rest is not None:
            await self._rest.aclose()


class Admission:
    """Load shedding by requests in progress. ``check()`` refuses a new request with
    ``Overloaded`` (503) once ``limit`` are in progress; a request is in progress inside
    ``with admission:``. ``in_flight`` is what the ``cutover_serving_in_flight`` gauge reads."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def check(self) -> None:
        if self.in_flight >= self.limit:
            raise Overloaded(f"overloaded: {self.in_flight} requests in progress")

    def __enter__(self) -> None:
        self.in_flight += 1

    def __exit__(self, *exc_info: object) -> None:
        self.in_flight -= 1


class Pipeline:
    """The request path of one loaded model revision (``config`` names it; ``metrics`` are its
    series; ``admission`` is shared with the server, which reports requests in progress)."""

    def __init__(
        self,
        config: ServeConfig,
        model: LoadedModel,
        metrics: ServingMetrics,
        admission: Admission,
        filters: Filters | None = None,
        safety: Guard | None = None,
        offload: Offload | None = None,
        tracing: Tracing | None = None,
        sampler: AttributionSampler | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.metrics = metrics
        self.admission = admission
        self.filters = filters or Filters()
        self.safety = safety
        self.offload = offload
        """Where large HTTP bodies are decoded and encoded (``serving/offload.py``); None: inline."""
        self.tracing = tracing or Tracing()
        """The stages' spans (``serving/tracing.py``); off by default."""
        self.sampler = sampler
        """Takes a fraction of answered rows to explain in the background (``--explain-sample-rate``)."""
        self._audited_drops = 0
        self._unbatched = frozenset(t.name for t in model.outputs if t.shape[:1] != (-1,))
        """Outputs without a batch dimension: classified as one row."""

    async def infer(
        self,
        read_body: Callable[[], Awaitable[bytes]],
        header_length: str | None = None,
        request_id: str | None = None,
    ) -> Encoded:
        """Answer one inference request over HTTP. ``read_body`` returns its body, read once a
        slot is free and before the request takes it (a client still sending its body is not in
        progress: slow uploads would hold every slot); ``header_length`` is the
        ``Inference-Header-Content-Length`` sent with it, if any; ``request_id`` the client's
        request id (``X-Request-Id``) for the audit record when the body names none. Large
        bodies are decoded, and large answers encoded, off the event loop (``offload``). Raises
        what :meth:`answer` raises."""
        self.admission.check()  # a request that would be shed is refused before its body is read
        body = await read_body()

        async def read() -> InferRequest:
            return await self._codec(len(body), decode_request, body, header_length, self.model.raw_input)

        async def encode(request: InferRequest, outputs: Tensors, parameters: dict[str, Any] | None) -> Encoded:
            size = sum(array.nbytes for array in outputs.values())
            header = dataclasses.replace(request, inputs={})  # what encoding reads, without the input arrays
            config = self.config
            return Encoded(
                *await self._codec(size, encode_response, config.name, config.version, header, outputs, parameters)
            )

        return await self.answer(read, encode, request_id)

    async def _codec(self, size: int, function: Callable[..., T], *args: object) -> T:
        if self.offload is None:
            return function(*args)
        return await self.offload.run(size, function, *args)

    async def answer(
        self,
        read: Callable[[], Awaitable[InferRequest]],
        encode: Callable[[InferRequest, Tensors, dict[str, Any] | None], Awaitable[Answer]],
        request_id: str | None = None,
    ) -> Answer:
        """Answer one inference request in any transport's encoding: ``read`` decodes the request
        (called once admitted), ``encode`` turns the request, the outputs and the response
        parameters (``{"fallback": link}`` when a fallback answered, else None) into the answer.
        ``request_id`` is the client's request id for the audit record when the request names
        none. Raises ``Overloaded`` (503), ``InvalidInput`` (400), ``InferenceError`` (500) when
        the model fails, ``UpstreamError`` (502) when its upstream does, and with a SafetyPolicy
        ``SafetyBlocked`` or ``CrisisEscalated`` (422) and ``SafetyUnavailable`` (503)."""
        model = self.model
        self.admission.check()
        with self.admission, self.metrics.statistics.request() as times:
            started = time.perf_counter()
            guard = self.safety
            policy = guard.current() if guard is not None else None
            tracing = self.tracing
            try:
                with tracing.span("decode"):
                    request = await read()
            except RecursionError:  # json's C parser recurses per nesting level
                raise InvalidInput("malformed JSON: nested too deeply") from None
            with tracing.span("validate"):
                validate(request.inputs, model.inputs, batched=model.batcher is not None)
            times.compute_input = time.perf_counter_ns() - times.started
            inputs = request.inputs
            found: list[dict[str, Any]] = []
            # The answer carries the id the audit record has: the request's, else the client's
            # X-Request-Id, else one made here (the protocol's response schema requires an id).
            request.id = request_id = request.id or request_id or new_request_id()
            if guard is not None and policy is not None:
                with (
                    self._refusals_audited(request_id, started, lambda: _digest(request.inputs), found),
                    tracing.span("safety", {"direction": "input"}),
                ):
                    inputs = await guard.tensors(policy, "input", inputs, request_id, found)
            for input_filter in self.filters.inputs:
                inputs = await input_filter(inputs)
            ood_scores = await self._score_ood(inputs)
            cache, cached = model.cache, None
            if cache is None:
                outputs = await self._predict(inputs, times)
            else:  # serving/cache.py: what is kept, and why all that follows runs on a hit too
                looked_up = time.perf_counter_ns()
                outputs, cached = await cache.outputs(inputs, request.parameters, lambda: self._predict(inputs, times))
                times.cached(cached, time.perf_counter_ns() - looked_up)
            fallback = model.fallback
            confidence = top1_confidence(outputs, fallback.confidence_output if fallback else None)
            times.rows = _rows(outputs)
            if self.sampler is not None:
                self.sampler.offer(inputs)
            await _per_row(times.rows, lambda: self.metrics.prediction(times.rows, confidence))
            link = None
            if fallback is not None and fallback.needed(confidence):
                with tracing.span("fallback"):
                    answer = await fallback.answer(inputs)
                if answer is not None:
                    outputs, link = answer.outputs, answer.link
                    self.metrics.fallback(link, "low_confidence")
            for output_filter in self.filters.outputs:
                outputs = await output_filter(outputs)
            if guard is not None and policy is not None:
                with (
                    self._refusals_audited(request_id, started, lambda: _digest(request.inputs), found),
                    tracing.span("safety", {"direction": "output"}),
                ):
                    outputs = await guard.tensors(policy, "output", outputs, request_id, found)
            encoding = time.perf_counter_ns()
            with tracing.span("encode"):
                answered = classified(outputs, request.outputs, model.labels, self._unbatched)
                encoded = await encode(request, answered, {"fallback": link} if link else None)
            times.compute_output = time.perf_counter_ns() - encoding
            if model.audit is not None:
                lookup: dict[str, Any] = {} if cached is None else {"cache": cached}
                self._audit(
                    request_id,
                    started,
                    input_digest=await _per_row(_elements(request.inputs), lambda: _digest(request.inputs)),
                    outputs=summarize_outputs(outputs),
                    confidence=None if confidence is None else [round(c, 6) for c in confidence[:32]],
                    ood_score=None if ood_scores is None else [round(float(v), 4) for v in ood_scores[:32]],
                    fallback=link,
                    safety=found if guard is not None else None,
                    **lookup,
                )
            return encoded

    async def chat(
        self, read_json: Callable[[], Awaitable[Any]], request_id: str | None = None
    ) -> dict[str, Any] | ChatStream:
        """Answer one chat completion: a ``chat.completion``, or for ``stream: true`` a started
        :class:`ChatStream`. ``read_json`` returns the parsed body (a ValueError from it is
        malformed JSON); ``request_id`` the client's request id for the audit record. Raises
        ``Overloaded`` (503), ``InvalidInput`` (400), ``ModelNotFound`` or ``NotSupported``
        (404), the upstream's failures (``TooManyRequests`` 429, ``UpstreamError`` 502,
        ``Overloaded`` 503), and with a SafetyPolicy ``SafetyBlocked`` (422) and
        ``SafetyUnavailable`` (503); for a stream, each of them only when it happens before the
        first chunk."""
        self.admission.check()
        started = time.perf_counter()
        guard = self.safety
        policy = guard.current() if guard is not None else None
        try:
            with self.tracing.span("decode"):
                body = await read_json()
        except ValueError as error:
            raise InvalidInput(f"malformed JSON: {error}") from None
        except RecursionError:
            raise InvalidInput("malformed JSON: nested too deeply") from None
        with self.tracing.span("validate"):
            request = chat_request(body, self.config.name)
        sent = request.get("messages")

        def digest() -> str:
            return input_digest([str(sent).encode()])

        found: list[dict[str, Any]] = []
        if request.get("stream"):
            stream = ChatStream()
            await stream.start(self._stream(stream, request, request_id, started, policy, digest))
            return stream
        with self.admission:
            request, escalated, request_id = await self._chat_request(
                request, request_id, started, policy, digest, found
            )
            if escalated is not None:
                return escalated
            try:
                with self.tracing.span("model"):
                    response = await self.model.adapter.chat(request)
            except ServingError:
                raise
            except Exception as error:
                log.warning("chat upstream failed: %s", error)
                raise UpstreamError(f"upstream failed: {error}") from None
            for response_filter in self.filters.chat_responses:
                response = await response_filter(response)
            self.metrics.predictions.inc()
            if guard is not None and policy is not None:
                assert request_id is not None
                with (
                    self._refusals_audited(request_id, started, digest, found),
                    self.tracing.span("safety", {"direction": "output"}),
                ):
                    response = await guard.chat_response(policy, response, request_id, found)
            if self.model.audit is not None:
                self._audit(
                    request_id or response.get("id"),
                    started,
                    input_digest=digest(),
                    outputs={"content": reply_content(response)},
                    safety=found if guard is not None else None,
                )
            return response

    async def _chat_request(
        self,
        request: dict[str, Any],
        request_id: str | None,
        started: float,
        policy: Policy | None,
        digest: Callable[[], str],
        found: list[dict[str, Any]],
    ) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
        """The request as the upstream gets it (screened, filtered), the answer to give instead
        when the crisis filter escalated it (audited here), and the request id (one is made up
        for the audit record and escalation when a SafetyPolicy applies and the client sent none)."""
        guard = self.safety
        if guard is not None and policy is not None:
            request_id = request_id or new_request_id()
            with (
                self._refusals_audited(request_id, started, digest, found),
                self.tracing.span("safety", {"direction": "input"}),
            ):
                request, escalated = await guard.chat_request(policy, request, request_id, found)
            if escalated is not None:
                if self.model.audit is not None:
                    outputs = {"content": reply_content(escalated)}
                    self._audit(request_id, started, input_digest=digest(), outputs=outputs, safety=found)
                return request, escalated, request_id
        for request_filter in self.filters.chat_requests:
            request = await request_filter(request)
        return request, None, request_id

    async def _stream(
        self,
        stream: ChatStream,
        request: dict[str, Any],
        request_id: str | None,
        started: float,
        policy: Policy | None,
        digest: Callable[[], str],
    ) -> AsyncGenerator[dict[str, Any], None]:
        """The chunks of a streamed chat completion, while holding an admission slot: the
        request screened as for a whole answer, then the upstream's chunks through the guard's
        stream screening (``Guard.chat_stream``). The SafetyPolicy stopping the answer ends the
        stream with a final chunk (``openai.stop_chunk``). Once the first chunk is out, the
        audit record is written when the stream ends (the content the client got, assembled)
        and ``stream.status`` says how the request counts."""
        guard = self.safety
        found: list[dict[str, Any]] = []
        with self.admission:
            request, escalated, request_id = await self._chat_request(
                request, request_id, started, policy, digest, found
            )
            if escalated is not None:
                for chunk in chunks_of(escalated):
                    yield chunk
                return
            upstream = self._upstream_chunks(request)
            screened = (
                upstream
                if guard is None or policy is None
                else guard.chat_stream(policy, upstream, request_id or "", found)
            )
            status, indices = 499, {0}
            last: dict[str, Any] | None = None
            content: list[str] = []
            try:
                async with aclosing(upstream), aclosing(screened):
                    try:
                        async for chunk in screened:
                            if last is None:
                                self.metrics.predictions.inc()
                            last = chunk
                            _assemble(chunk, content, indices)
                            yield chunk
                        status = 200
                    except SafetyBlocked as refusal:  # the answer, stopped: the client hears why
                        status = 200 if isinstance(refusal, CrisisEscalated) else refusal.status
                        last = stop_chunk(last, sorted(indices), str(refusal))
                        _assemble(last, content, indices)
                        yield last
            except ServingError as error:
                status = error.status
                raise
            except Exception as error:
                status = InferenceError.status
                log.exception("chat stream failed")
                raise InferenceError(f"the stream failed: {error}") from None
            finally:
                stream.status = status
                if last is not None and self.model.audit is not None:
                    self._audit(
                        request_id or last.get("id"),
                        started,
                        status,
                        found if guard is not None else None,
                        input_digest=digest(),
                        outputs={"content": "".join(content)},
                    )

    async def _upstream_chunks(self, request: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """The upstream's streamed chunks; a failure that is not a named error is an ``UpstreamError``.
        The ``model`` span ends with the first chunk: a span cannot stay current across yields."""
        chunks = self.model.adapter.chat_stream(request)
        async with aclosing(chunks):
            try:
                with self.tracing.span("model", {"stream": True}):
                    first = await anext(chunks, None)
                if first is None:
                    return
                yield first
                async for chunk in chunks:
                    yield chunk
            except ServingError:
                raise
            except Exception as error:
                log.warning("chat upstream failed: %s", error)
                raise UpstreamError(f"upstream failed: {error}") from None

    async def _predict(self, inputs: Mapping[str, np.ndarray], times: RequestTimes) -> Tensors:
        """The primary model's outputs, through the batcher when batching is on; ``times`` gets
        the time it queued and ran."""
        try:
            if self.model.batcher is not None:
                began, queued, ran = time.perf_counter_ns(), times.queue, times.compute_infer
                try:
                    return await self.model.batcher.submit(inputs, times)
                finally:  # the queue and the batch's run, measured by the batcher
                    queued = times.queue - queued
                    self.tracing.record("queue", began, queued)
                    self.tracing.record("model", began + queued, times.compute_infer - ran)
            began = time.perf_counter_ns()
            try:
                with self.tracing.span("model"):
                    return await self.model.adapter.infer(inputs)
            finally:
                times.compute_infer = time.perf_counter_ns() - began
                self.metrics.statistics.execution(_rows(inputs), times.compute_infer)
        except QueueFull as error:
            raise Overloaded(f"overloaded: {error}") from None
        except NotSupported as error:
            # Tensors the model cannot take (a chat-only model) are the client's mistake: a 400,
            # as before the split; 404 is for chat completions asked of a tensor model.
            raise InvalidInput(str(error)) from None
        except ServingError:
            raise
        except Exception as error:
            log.warning("model %s failed: %s", self.config.name, error)
            raise InferenceError(f"model failed: {error}") from None

    async def _score_ood(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray | None:
        """Each row's out-of-distribution score (Mahalanobis distance, or the ONNX scorer's of
        ``outOfDistribution.method``; None when the model has no training statistics); rows
        beyond the threshold are counted, and each watched feature's
        value by its bin for the input drift analysis. Raises ``InvalidInput``
        for rows the statistics cannot score (another width, where the model leaves it free)."""
        spec = self.config.out_of_distribution
        check = self.model.ood_check
        if check is None or spec is None:
            return None
        array = inputs[spec.input]
        if array.ndim > 1 and not array.shape[0]:
            return np.zeros(0)  # an empty batch: no rows to score (reshape cannot infer their width)
        rows = array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(1, -1)
        try:
            scores = check.scorer.score(rows.astype(np.float64, copy=False))
        except ScorerError as error:
            raise InvalidInput(f"input {spec.input!r}: {error}") from None

        def observe() -> None:
            for score in scores.tolist():
                if math.isfinite(score):  # an infinite or NaN one would spoil the histogram's sum
                    self.metrics.ood_score.observe(score)

        await _per_row(len(scores), observe)
        if self.model.drift is not None:
            self.metrics.input_rows(self.model.drift.counts(rows.astype(np.float64, copy=False)))
        beyond = int((~(scores <= check.threshold)).sum())  # NaN and infinite inputs are beyond it too
        if beyond:
            self.metrics.out_of_distribution(beyond)
        return scores

    @contextmanager
    def _refusals_audited(
        self, request_id: str, started: float, digest: Callable[[], str], found: list[dict[str, Any]]
    ) -> Iterator[None]:
        """Audit a request the SafetyPolicy refuses inside the block (``SafetyBlocked`` or
        ``CrisisEscalated``, re-raised): its findings and status, no outputs. ``digest`` gives
        the input digest of what the client sent."""
        try:
            yield
        except SafetyBlocked as refusal:
            if self.model.audit is not None:
                self._audit(request_id, started, refusal.status, found, input_digest=digest(), outputs=None)
            raise

    def _audit(
        self,
        request_id: str | None,
        started: float,
        status: int = 200,
        safety: list[dict[str, Any]] | None = None,
        **fields: Any,
    ) -> None:
        """One audit record: who answered, when and how fast, plus the request's own ``fields``
        (input_digest, outputs, confidence, ood_score, fallback, and with a SafetyPolicy safety:
        what its filters found). Records the log dropped since the last one are counted in
        ``cutover_serving_audit_dropped_total``."""
        audit = self.model.audit
        assert audit is not None
        config = self.config
        audit.record(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "request_id": request_id or new_request_id(),
                "namespace": config.namespace,
                "model": config.name,
                "version": config.version,
                "revision": config.revision,
                "confidence": None,
                "ood_score": None,
                "fallback": None,
                **fields,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
                "status": status,
                **({"safety": safety} if safety is not None else {}),
                **self.tracing.ids(),
            }
        )
        if audit.dropped > self._audited_drops:
            self.metrics.audit_dropped.inc(audit.dropped - self._audited_drops)
            self._audited_drops = audit.dropped


def new_request_id() -> str:
    """A request id made here: a random UUID (version 4) as 32 hex digits, the form of
    ``uuid.uuid4().hex``, drawn from ``random`` rather than the operating system: the id names a
    request and guards nothing, and ``uuid4()`` costs a system call and a ``UUID`` object."""
    bits = (random.getrandbits(128) & ~(0xF000 << 64 | 0xC000 << 48)) | 0x4000 << 64 | 0x8000 << 48
    return f"{bits:032x}"


def _rows(arrays: Mapping[str, np.ndarray]) -> int:
    """The rows (batch size) of a request's inputs or outputs: the first one's first dimension."""
    first = next(iter(arrays.values()), None)
    return first.shape[0] if first is not None and first.ndim else 1


LARGE_ROWS = 10_000
"""Rows (or elements) from which work done row by row runs on a thread: a Python loop observing
600,000 confidences held the event loop 0.34 s (on a thread it lets go of the GIL every 5 ms)."""


async def _per_row(rows: int, work: Callable[[], T]) -> T:
    """``work()``, which goes row by row (observing metrics, digesting BYTES elements): inline for
    fewer than ``LARGE_ROWS`` rows, else on a thread so that probes and other requests keep being
    answered."""
    if rows < LARGE_ROWS:
        return work()
    return await asyncio.to_thread(work)


def _elements(inputs: Mapping[str, np.ndarray]) -> int:
    return sum(array.size for array in inputs.values())


def _digest(inputs: Mapping[str, np.ndarray]) -> str:
    """The audit digest of what the client sent: its input tensors' raw bytes."""
    return input_digest(tensor_bytes(a) for a in inputs.values())


def _assemble(chunk: Mapping[str, Any], content: list[str], indices: set[int]) -> None:
    """Note a streamed chunk: its first choice's text in ``content`` (the audit record's
    content, as of a whole answer), every choice's index in ``indices``."""
    for choice in chunk.get("choices") or ():
        index = choice.get("index", 0)
        indices.add(index)
        text = (choice.get("delta") or {}).get("content")
        if index == 0 and isinstance(text, str):
            content.append(text)
