"""``cutover safety check --policy FILE``: a SafetyPolicy applied to texts offline, so that a policy
can be tried before it is applied and a labelled set can be scored with it.

Input: JSON lines ``{"text": "...", "scope": "input" | "output"}`` (scope defaults to ``input``:
a user's message; ``output`` is a model's answer). Output: one JSON line per input line::

    {"text": ..., "scope": ..., "decision": "pass" | "block" | "escalate" | "redact" | "disclaim"
     | "flag" | "unavailable", "findings": [{"filter", "category", "score", "action"}, ...],
     "answer": <the text as it would be answered>, "errors": [{"filter", "error"}, ...]}

``answer`` is the policy's ``blockMessage`` for ``block``, the crisis ``responseMessage`` for
``escalate``, else the text redacted or disclaimed as serving would answer it. A filter that
fails is listed in ``errors``; with ``failClosed`` the decision is then ``unavailable`` (serving
answers 503) and ``answer`` is null. A line that is not such an object answers ``{"line": n,
"error": ...}``. No escalation webhook is called.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from .base import Direction
from .policy import Policy


def check(policy: Policy, text: str, scope: str = "input") -> dict[str, Any]:
    """The answer line for one text (see the module docstring). Raises ``ValueError`` for a
    scope other than ``input`` or ``output``."""
    if scope not in ("input", "output"):
        raise ValueError(f"scope must be input or output, not {scope!r}")
    direction: Direction = "input" if scope == "input" else "output"
    screening = policy.screen(direction, [text])
    decision: str = screening.decision
    answer: str | None = screening.texts[0]
    if screening.failures and policy.fail_closed:
        decision, answer = "unavailable", None
    elif decision == "block":
        answer = policy.block_message
    elif decision == "escalate":
        answer = policy.crisis_message
    return {
        "text": text,
        "scope": direction,
        "decision": decision,
        "findings": [
            {"filter": hit.filter, "category": hit.category, "score": round(hit.score, 4), "action": hit.action}
            for hit in screening.hits
        ],
        "answer": answer,
        "errors": [{"filter": failure.filter, "error": failure.error} for failure in screening.failures],
    }


def check_lines(policy: Policy, lines: Iterable[str]) -> Iterator[tuple[bool, str]]:
    """Each non-blank input line's answer as (ok, JSON line); ok is False for a line that is not
    a ``{"text", "scope"}`` object."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError('expected an object {"text": "...", "scope": "input" | "output"}')
            answer = check(policy, item["text"], item.get("scope", "input"))
        except (ValueError, RecursionError) as error:
            yield False, json.dumps({"line": number, "error": str(error)})
            continue
        yield True, json.dumps(answer, ensure_ascii=False)
