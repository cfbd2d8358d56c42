"""The SafetyPolicy on one server's request path: which policy applies now, screening a chat
request, a chat response or a set of tensors with it, and what the answer becomes.

The pipeline (``serving/pipeline.py``) takes :meth:`Guard.current` once per request, so a request
is screened both ways by one policy generation even when a new one is applied meanwhile, then
calls :meth:`Guard.chat_request`, :meth:`Guard.chat_response` or :meth:`Guard.tensors`. Each
screens the texts (``texts.py``) with the policy (``policy.py``), counts and records what it
found, and then:

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
finished, at most one violation (the category with the highest score), the filter's time.

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
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import numpy as np

from ..errors import CrisisEscalated, InvalidInput, SafetyBlocked, SafetyUnavailable
from ..metrics import SafetyMetrics
from .base import Direction
from .escalation import Escalation, Escalator, Outcome
from .policy import Policy, Screening
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
        size = max(sum(map(len, texts.texts)), sum(map(len, texts.classified or ())))
        if size > self.max_characters:
            if direction == "input":
                raise InvalidInput(
                    f"the safety policy reads at most {self.max_characters} characters of text per request; "
                    f"this one has {size}"
                )
            reason = f"the answer has {size} characters of text, over the {self.max_characters} the filters read"
            screening = policy.unscreened(direction, texts.texts, reason)
        elif size > OFF_LOOP_CHARACTERS:
            screening = await asyncio.to_thread(policy.screen, direction, texts.texts, texts.classified)
        else:
            screening = policy.screen(direction, texts.texts, texts.classified)
        metrics = self.metrics
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
        if screening.failures and policy.fail_closed:
            names = ", ".join(sorted({f.filter for f in screening.failures}))
            raise SafetyUnavailable(
                f"the safety filter {names} failed and the policy is failClosed: refused, not answered unfiltered"
            )
        if screening.decision == "block":
            raise SafetyBlocked(policy.block_message)
        if screening.decision == "escalate":
            self._escalate(policy, screening, request_id)
        return screening

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
