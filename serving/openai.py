"""The OpenAI-compatible face of an ``llm`` model: the checks ``/v1/chat/completions`` makes
before the upstream sees a request, and the bodies of ``/v1/models``. The request path itself
(admission, the upstream call, metrics, the audit record) is the pipeline's
(``serving/pipeline.py``); streaming is refused here (``stream: true`` answers 400), since the
pipeline answers one JSON body per request.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import InvalidInput, ModelNotFound

ROLES = ("system", "user", "assistant", "tool")
"""The message roles a chat request may use."""


def chat_request(body: Any, model: str) -> dict[str, Any]:
    """``body`` (parsed JSON) as a chat completion request for ``model``, unchanged once it
    passes: a JSON object with a non-empty ``messages`` list of ``{role, content}`` objects.
    Raises ``InvalidInput`` (400) for a malformed request or ``stream: true``, ``ModelNotFound``
    (404) when it names another model."""
    if not isinstance(body, dict):
        raise InvalidInput("the request must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidInput("messages must be a non-empty list")
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise InvalidInput(f"messages[{position}] needs a role of system, user, assistant or tool")
        content = message.get("content")
        if not isinstance(content, str | list | None):
            raise InvalidInput(f"messages[{position}].content must be a string or a list of parts")
    if body.get("model") not in (None, model):
        raise ModelNotFound(f"unknown model {body.get('model')!r}; this server serves {model!r}")
    if body.get("stream"):
        raise InvalidInput("stream: true is not supported by this endpoint; send stream: false")
    return body


def reply_content(response: Mapping[str, Any]) -> Any:
    """The first choice's message content of a chat completion (what the audit log records), or
    None when the response has none."""
    choices = response.get("choices") or [{}]
    return (choices[0].get("message") or {}).get("content")


def model_list(model: str) -> dict[str, Any]:
    """The body of ``GET /v1/models``: the one model this server serves."""
    return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "cutover"}]}
