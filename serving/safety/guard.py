"""The SafetyPolicy on one server's request path: which policy applies now, screening a chat
request, a chat response or a set of tensors with it, and what the answer becomes.

The pipeline (``serving/pipeline.py``) takes :meth:`Guard.current` once per request, so a request
is screened both ways by one policy generation even when a new one is applied meanwhile, then
calls :meth:`Guard.chat_request`, :meth:`Guard.chat_response`, :meth:`Guard.chat_stream` (a
streamed answer, screened a sentence at a time as ``stream.py`` holds it back) or
:meth:`Guard.tensors`. Each screens the texts (``texts.py``) with the policy (``policy.py``),
counts and records what it found, and then:

- ``block``: raises ``SafetyBlocked`` (422, the ``blockMessage``);
- ``escalate``: notifies the escalation webhook (one event per request and scope, with the
  category of the highest score) and answers without the model (chat input: a 200 completion
  whose content is the ``responseMessage``, ``finish_reason: "content_filter"``), instead of the
  model (chat output: every choice replaced so), or raises ``CrisisEscalated`` (422 with the
  ``responseMessage``) for an inference request;
- otherwise returns the carrier with redacted or disclaimed texts in place (``flag``: unchanged).

A filter that failed is counted in ``cutover_safety_filter_errors_total``; with ``failClosed`` the
request is refused with ``SafetyUnavailable`` (503, saying which filter failed), never answered
unfiltered; without it the texts go on as the other filters left them.

Metrics per request, filter and scope: one check when the filter read at least one text and
finished, at most one violation (the category with the highest score), the filter's time; for a
stream, over all its pieces together.

Long texts are screened on a worker thread (detectors are pure and thread-safe), so a long
message costs that request time but never stalls the event loop for the others. Over
:data:`MAX_CHARACTERS` in one direction, an input is refused (400, saying the limit) and an
answer is a failure of every filter (refused under ``failClosed``): never answered unread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import CrisisEscalated, InvalidInput, SafetyBlocked, SafetyUnavailable
from ..metrics import SafetyMetrics
from .base import Direction
from .escalation import Escalation, Escalator, Outcome
from .policy import STRENGTH, Hit, Policy, Screening
from .stream import HeldText
from .texts import Texts, chat_request_texts, chat_response_texts, tensor_texts

log = logging.getLogger("cutover.serving.safety")

Carrier = TypeVar("Carrier")

OFF_LOOP_CHARACTERS = 32_768
"""Texts longer than this, in all, are screened on a worker thread."""
MAX_CHARACTERS = 1_000_000
"""The most characters of text one request's screening reads in each direction, by default:
the filters take several seconds per million characters, so a bigger request is refused (an
input: ``InvalidInput``, 400, saying the limit) or treated as a filter failure (an answer:
refused under ``failClosed``, passed on and counted without), never answered unread."""


class Notifier(Protocol):
    """What the guard needs of an escalation webhook client (``escalation.Escalator``)."""

    def notify(self, event: Escalation) -> bool: ...

    async def close(self, drain: float = 2.0) -> None: ...


NotifierFactory = Callable[[str, float, bool, Callable[[Outcome], None]], Notifier]
"""Builds a notifier from (url, timeout seconds, url from a Secret, outcome counter)."""


def escalator(url: str, timeout: float, from_secret: bool, count: Callable[[Outcome], None]) -> Notifier:
    """The default :data:`NotifierFactory`: an :class:`Escalator`."""
    return Escalator(url, timeout, count=count, url_from_secret=from_secret)


class Guard:
    """The SafetyPolicy of one server (``namespace``, ``model``, ``revision`` name it in metrics
    and escalations). ``policy`` is None until a valid one is applied; ``error`` says why there is
    none, or why the last policy file was refused. ``notifiers`` builds escalation webhook
    clients (tests pass their own)."""

    def __init__(
        self,
        metrics: SafetyMetrics,
        namespace: str,
        model: str,
        revision: str,
        notifiers: NotifierFactory = escalator,
        max_characters: int = MAX_CHARACTERS,
    ) -> None:
        self.metrics = metrics
        self.max_characters = max_characters
        self.namespace, self.model, self.revision = namespace, model, revision
        self.policy: Policy | None = None
        self.error: str | None = "no safety policy applied yet"
        self._notifiers = notifiers
        self._notifier: Notifier | None = None
        self._notifier_key: tuple[str, float, bool] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # -- policy lifecycle ------------------------------------------------------------------

    def apply(self, policy: Policy) -> None:
        """Apply ``policy`` to the next request: metrics name its generation and have its
        filters' children at 0; the escalation client follows its webhook (a changed URL or
        timeout closes the old client in the background, after a short drain)."""
        self.metrics.applied(
            policy.name,
            policy.generation,
            (
                (rule.name, rule.action_on(scope), rule.categories, (scope,))
                for rule in policy.rules
                for scope in sorted(rule.directions)
            ),
        )
        key = (
            None
            if policy.escalation_url is None
            else (
                policy.escalation_url,
                policy.escalation_timeout,
                policy.escalation_url_from_secret,
            )
        )
        if key != self._notifier_key:
            self._retire()
            self._notifier_key = key
            if key is not None:
                try:
                    self._notifier = self._notifiers(*key, self.metrics.escalation)
                except ValueError as error:
                    log.error("safety policy %s: escalation webhook unusable: %s", policy.name, error)
        self.policy, self.error = policy, None
        log.info("safety policy %s generation %d applied", policy.name, policy.generation)

    def refuse(self, reason: str) -> None:
        """A policy file could not be applied: counted and logged; the last good policy stays."""
        self.metrics.load_failed()
        kept = f"; keeping generation {self.policy.generation}" if self.policy is not None else ""
        log.error("safety policy not applied: %s%s", reason, kept)
        if self.policy is None:
            self.error = reason

    def current(self) -> Policy:
        """The policy for this request; ``SafetyUnavailable`` (503) while there is none."""
        policy = self.policy
        if policy is None:
            raise SafetyUnavailable(f"no safety policy can be applied, so nothing is answered unfiltered: {self.error}")
        return policy

    async def close(self) -> None:
        """Close the escalation client (a short drain) and wait for retired ones."""
        self._retire()
        if self._closing:
            await asyncio.wait(self._closing)

    def _retire(self) -> None:
        """Close the current escalation client in the background (its queue gets a short drain)."""
        notifier, self._notifier = self._notifier, None
        if notifier is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop, so no sender task ever ran: nothing to drain
            return
        task = loop.create_task(notifier.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    # -- the request path ------------------------------------------------------------------

    async def chat_request(
        self, policy: Policy, request: dict[str, Any], request_id: str, found: list[dict[str, Any]]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Screen a checked chat request. Returns the request as the upstream should see it,
        and the answer to send instead of asking the upstream when the crisis filter escalated
        (else None). Raises ``SafetyBlocked`` or ``SafetyUnavailable``; ``found`` collects the
        audit records."""
        if not policy.rules_for("input"):
            return request, None
        texts = chat_request_texts(request)
        screening = await self._screen(policy, "input", texts, request_id, found)
        if screening.decision == "escalate":
            return request, crisis_completion(self.model, policy.crisis_message)
        return (texts.put(screening.texts) if screening.changed else request), None

    async def chat_response(
        self, policy: Policy, response: dict[str, Any], request_id: str, found: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """Screen the upstream's chat completion and return it as the client should see it."""
        if not policy.rules_for("output"):
            return response
        texts = chat_response_texts(response)
        screening = await self._screen(policy, "output", texts, request_id, found)
        if screening.decision == "escalate":
            return crisis_completion(self.model, policy.crisis_message, response)
        return texts.put(screening.texts) if screening.changed else response

    async def chat_stream(
        self,
        policy: Policy,
        chunks: AsyncIterator[dict[str, Any]],
        request_id: str,
        found: list[dict[str, Any]],
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Screen a streamed chat completion (its ``chat.completion.chunk`` objects) and yield
        the chunks as the client should see them. Each choice's content is held back and
        released a piece at a time (``stream.py``), each piece screened before it is sent,
        redacted where the action is ``redact``; an advice ``disclaimer`` comes once, at the end
        of its choice. Logprobs are dropped (they spell out the held-back tokens); tool calls and
        other fields go on as they come.

        One decision per request, as for a whole answer: the pieces' findings are counted
        together, once (at most one violation per filter), when the stream ends, is stopped, or
        is closed. ``block`` stops the stream by raising ``SafetyBlocked``, ``escalate`` (after
        notifying) by raising ``CrisisEscalated``, a failure under ``failClosed`` by raising
        ``SafetyUnavailable``; what was released before stays released. Closing this generator
        does not close ``chunks``."""
        if not policy.rules_for("output"):
            async for chunk in chunks:
                yield chunk
            return
        held: dict[int, HeldText] = {}
        disclaimed: set[int] = set()
        screened: list[Screening] = []
        size = 0

        async def release(index: int, piece: str) -> str:
            nonlocal size
            size += len(piece)
            if size > self.max_characters:
                reason = f"the answer has over {self.max_characters} characters of text, more than the filters read"
                screening = policy.unscreened("output", (piece,), reason)
            else:
                screening = await self._read(policy, "output", (piece,), None)
            screened.append(screening)
            if screening.decision in ("block", "escalate") or (screening.failures and policy.fail_closed):
                stopped = _merged(screened)
                screened.clear()
                self._record(policy, stopped, request_id, found)
                self._verdict(policy, stopped)
                raise CrisisEscalated(policy.crisis_message)
            (text,) = screening.texts
            tail = f"\n\n{policy.disclaimer}"
            if policy.disclaimer and text.endswith(policy.disclaimer) and not piece.endswith(policy.disclaimer):
                disclaimed.add(index)
                text = text.removesuffix(tail) if text.endswith(tail) else ""
            return text

        try:
            last: dict[str, Any] | None = None
            async for chunk in chunks:
                last = chunk
                choices = chunk.get("choices")
                if not isinstance(choices, list) or not choices:
                    yield chunk  # the usage chunk
                    continue
                passed = []
                for choice in choices:
                    if not isinstance(choice, dict):
                        continue
                    index = choice.get("index", 0)
                    index = index if isinstance(index, int) else 0
                    delta: dict[str, Any] = choice["delta"] if isinstance(choice.get("delta"), dict) else {}
                    content = delta.get("content")
                    finished = choice.get("finish_reason") is not None
                    piece = held.setdefault(index, HeldText()).add(
                        content if isinstance(content, str) else "", finished
                    )
                    text = await release(index, piece) if piece else ""
                    if finished:  # the choice is complete: nothing of it is left to release
                        del held[index]
                        if index in disclaimed:
                            disclaimed.discard(index)
                            text += f"\n\n{policy.disclaimer}"
                    out = {key: value for key, value in delta.items() if key != "content"}
                    if text:
                        out["content"] = text
                    if out or finished:
                        passed.append({**choice, "delta": out, "logprobs": None})
                if passed:
                    yield {**chunk, "choices": passed}
            rest = [(index, text.add("", final=True)) for index, text in held.items()]
            released = [(index, await release(index, piece) if piece else "") for index, piece in rest]
            released = [(i, t + f"\n\n{policy.disclaimer}" if i in disclaimed else t) for i, t in released]
            if any(text for _, text in released):
                head = {key: value for key, value in (last or {}).items() if key not in ("choices", "usage")}
                yield {
                    **head,
                    "choices": [{"index": i, "delta": {"content": t}, "finish_reason": None} for i, t in released if t],
                }
        finally:
            if screened:  # ended, or closed early: count what was read, once
                self._record(policy, _merged(screened), request_id, found)

    async def tensors(
        self,
        policy: Policy,
        direction: Direction,
        tensors: dict[str, np.ndarray],
        request_id: str,
        found: list[dict[str, Any]],
    ) -> dict[str, np.ndarray]:
        """Screen the BYTES tensors of an inference request (``input``) or answer (``output``).
        Raises ``InvalidInput`` (400) for an input element that is not UTF-8, ``SafetyBlocked``,
        ``CrisisEscalated`` or ``SafetyUnavailable``."""
        if not policy.rules_for(direction):
            return tensors
        texts = tensor_texts(tensors, direction)
        screening = await self._screen(policy, direction, texts, request_id, found)
        if screening.decision == "escalate":
            raise CrisisEscalated(policy.crisis_message)
        return texts.put(screening.texts) if screening.changed else tensors

    async def _screen(
        self, policy: Policy, direction: Direction, texts: Texts[Carrier], request_id: str, found: list[dict[str, Any]]
    ) -> Screening:
        """Screen, count, audit, notify; raise for ``block`` and fail-closed failures."""
        screening = await self._read(policy, direction, texts.texts, texts.classified)
        self._record(policy, screening, request_id, found)
        self._verdict(policy, screening)
        return screening

    async def _read(
        self, policy: Policy, direction: Direction, texts: tuple[str, ...], classified: tuple[str, ...] | None
    ) -> Screening:
        """The policy's screening of ``texts``, on a worker thread when they are long; nothing
        counted yet. Raises ``InvalidInput`` for an input over ``max_characters``."""
        size = max(sum(map(len, texts)), sum(map(len, classified or ())))
        if size > self.max_characters:
            if direction == "input":
                raise InvalidInput(
                    f"the safety policy reads at most {self.max_characters} characters of text per request; "
                    f"this one has {size}"
                )
            reason = f"the answer has {size} characters of text, over the {self.max_characters} the filters read"
            return policy.unscreened(direction, texts, reason)
        if size > OFF_LOOP_CHARACTERS:
            return await asyncio.to_thread(policy.screen, direction, texts, classified)
        return policy.screen(direction, texts, classified)

    def _record(self, policy: Policy, screening: Screening, request_id: str, found: list[dict[str, Any]]) -> None:
        """Count one request's screening in one direction (checks, at most one violation per
        filter, time, failures), add its hits to the audit record ``found``, and notify an
        escalation."""
        metrics = self.metrics
        direction = screening.scope
        for name, seconds in screening.seconds:
            metrics.took(name, seconds)
        for name in screening.checked:
            metrics.checked(name, direction)
        for hit in screening.violations():
            metrics.violated(hit.filter, hit.category, hit.action, direction)
        found.extend(hit.record() for hit in screening.hits)
        for failure in screening.failures:
            metrics.failed(failure.filter, failure.scope)
            log.error(
                "safety filter %s failed on request %s (%s): %s", failure.filter, request_id, direction, failure.error
            )
        if screening.decision == "escalate" and not (screening.failures and policy.fail_closed):
            self._escalate(policy, screening, request_id)

    @staticmethod
    def _verdict(policy: Policy, screening: Screening) -> None:
        """Raise ``SafetyUnavailable`` for a failure under ``failClosed``, ``SafetyBlocked`` for ``block``."""
        if screening.failures and policy.fail_closed:
            names = ", ".join(sorted({f.filter for f in screening.failures}))
            raise SafetyUnavailable(
                f"the safety filter {names} failed and the policy is failClosed: refused, not answered unfiltered"
            )
        if screening.decision == "block":
            raise SafetyBlocked(policy.block_message)

    def _escalate(self, policy: Policy, screening: Screening, request_id: str) -> None:
        crisis = [hit for hit in screening.violations() if hit.filter == "crisis"]
        if not crisis:
            return
        if self._notifier is None:
            log.error(
                "crisis escalation of request %s not sent: the policy's webhook has no usable URL (secrets dir?)",
                request_id,
            )
            self.metrics.escalation("failed")
            return
        self._notifier.notify(
            Escalation(
                request_id=request_id,
                namespace=self.namespace,
                model=self.model,
                revision=self.revision,
                policy=policy.name,
                policy_generation=policy.generation,
                category=crisis[0].category,
                scope=screening.scope,
                score=crisis[0].score,
                time=datetime.now(UTC),
            )
        )


def crisis_completion(model: str, message: str, response: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A chat completion that answers ``message`` as the assistant, ``finish_reason:
    "content_filter"``: a new one (the request was escalated, the model never asked), or
    ``response`` with every choice replaced (the model's answer was escalated)."""
    choice = {"message": {"role": "assistant", "content": message}, "finish_reason": "content_filter"}
    if response is not None:
        choices = response.get("choices")
        count = len(choices) if isinstance(choices, list) and choices else 1
        return {**response, "choices": [{"index": i, **choice} for i in range(count)]}
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, **choice}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def _merged(screenings: list[Screening]) -> Screening:
    """The screenings of one stream's pieces as one screening of the whole answer: the strongest
    decision, each (filter, category) at its highest score, each filter checked and failed once,
    its time summed."""
    hits: dict[tuple[str, str], Hit] = {}
    seconds: dict[Any, float] = {}
    checked: dict[Any, None] = {}
    failures: dict[Any, Any] = {}
    for screening in screenings:
        for hit in screening.hits:
            key = (hit.filter, hit.category)
            if key not in hits or hit.score > hits[key].score:
                hits[key] = hit
        for name, took in screening.seconds:
            seconds[name] = seconds.get(name, 0.0) + took
        checked.update(dict.fromkeys(screening.checked))
        for failure in screening.failures:
            failures.setdefault(failure.filter, failure)
    decisions = {screening.decision for screening in screenings}
    return Screening(
        "output",
        next((action for action in STRENGTH if action in decisions), "pass"),
        (),
        hits=tuple(hits.values()),
        checked=tuple(checked),
        failures=tuple(failures.values()),
        seconds=tuple(seconds.items()),
    )
