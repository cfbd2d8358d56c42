"""The OpenAI-compatible face of an ``llm`` model: the checks ``/v1/chat/completions`` makes
before the upstream sees a request, the bodies of ``/v1/models``, OpenAI's error object, and the
server-sent events of a streamed completion. The request path itself (admission, the upstream
call, metrics, the audit record) is the pipeline's (``serving/pipeline.py``).

Streaming follows OpenAI's chat API: ``stream: true`` answers ``text/event-stream`` with one
``data: <chat.completion.chunk>`` event per chunk and ``data: [DONE]`` at the end; a failure
after the stream started cannot change the status, so it is an event ``data: {"error": {...}}``
(which the ``openai`` client raises as ``APIError``), and no ``[DONE]`` follows it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from .errors import InvalidInput, ModelNotFound

ROLES = ("system", "user", "assistant", "tool")
"""The message roles a chat request may use."""


def chat_request(body: Any, model: str) -> dict[str, Any]:
    """``body`` (parsed JSON) as a chat completion request for ``model``, unchanged once it
    passes: a JSON object with a non-empty ``messages`` list of ``{role, content}`` objects.
    ``stream`` must be a boolean and ``stream_options`` an object. Raises ``InvalidInput`` (400)
    for a malformed request, ``ModelNotFound`` (404) when it names another model."""
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
    if not isinstance(body.get("stream", False), bool | None):
        raise InvalidInput("stream must be true or false")
    if not isinstance(body.get("stream_options"), dict | None):
        raise InvalidInput("stream_options must be an object")
    return body


def reply_content(response: Mapping[str, Any]) -> Any:
    """The first choice's message content of a chat completion (what the audit log records), or
    None when the response has none."""
    choices = response.get("choices") or [{}]
    return (choices[0].get("message") or {}).get("content")


def model_list(model: str) -> dict[str, Any]:
    """The body of ``GET /v1/models``: the one model this server serves."""
    return {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "cutover"}]}


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error"}
"""OpenAI's error ``type`` by status; other 4xx are ``invalid_request_error``, 5xx ``server_error``."""
ERROR_CODES = {
    404: "model_not_found",
    413: "request_too_large",
    422: "content_filter",
    429: "rate_limit_exceeded",
    502: "upstream_error",
    503: "service_unavailable",
}
"""OpenAI's error ``code`` by status (``content_filter`` as Azure OpenAI names a filtered request)."""


def error_object(status: int, message: str) -> dict[str, Any]:
    """OpenAI's error body, ``{"error": {"message", "type", "param", "code"}}``, for an error
    answered with ``status``: what the ``openai`` client reads into ``APIError.message``,
    ``.type`` and ``.code`` (a plain ``{"error": "..."}`` leaves it only "Error code: 400")."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": None, "code": ERROR_CODES.get(status)}}


def error_body(request: web.Request, status: int, message: str) -> dict[str, Any]:
    """The error body hook (``serving/http.py``'s ``json_errors``) of a process serving ``/v1``:
    OpenAI's error object on ``/v1`` paths, the Open Inference Protocol's ``{"error"}`` elsewhere."""
    return error_object(status, message) if request.path.startswith("/v1/") else {"error": message}


def event(data: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
"""The event that ends a streamed completion."""


def chunks_of(completion: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A whole chat completion (one the server answers itself, such as the crisis message) as
    the chunks of a stream: per choice, one chunk with the role and the content, then one with
    its ``finish_reason``."""
    head = {key: completion.get(key) for key in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
    choices = completion.get("choices") or []
    return [
        {**head, "choices": [{"index": c.get("index", 0), "delta": c.get("message") or {}, "finish_reason": None}]}
        for c in choices
    ] + [
        {**head, "choices": [{"index": c.get("index", 0), "delta": {}, "finish_reason": c.get("finish_reason")}]}
        for c in choices
    ]


def stop_chunk(like: Mapping[str, Any] | None, indices: Sequence[int], content: str) -> dict[str, Any]:
    """The chunk that ends a stream the SafetyPolicy stopped: ``content`` (its ``blockMessage``
    or crisis message) for every choice in ``indices``, ``finish_reason: "content_filter"``;
    ``id``, ``created`` and ``model`` as in the chunk ``like`` (the last one streamed)."""
    head = {key: (like or {}).get(key) for key in ("id", "created", "model")}
    choices = [{"index": i, "delta": {"content": content}, "finish_reason": "content_filter"} for i in indices or (0,)]
    return {**head, "object": "chat.completion.chunk", "choices": choices}
