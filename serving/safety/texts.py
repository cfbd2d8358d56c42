"""Where a SafetyPolicy's texts are in what the serving path carries, and how edited texts go back.

Chat request (OpenAI style): PII reads every message's string ``content`` and every text part
(``{"type": "text", "text": ...}``) of a list ``content``; the classifiers read the last
``user`` message only (its string, or its text parts joined by newlines), since earlier turns
were checked when they were sent. Chat response: every choice's ``message.content`` (string or
text parts). Open Inference Protocol: every element of every BYTES tensor; other tensors are not
text and are neither read nor counted.

Each ``*_texts`` function returns a :class:`Texts`: the texts, what the classifiers read, and a
``put`` that returns the carrier with edited texts in place, copying only what changed, so the
value the client sent (and its audit digest) stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from ..errors import InvalidInput
from ..protocol import datatype_of

Carrier = TypeVar("Carrier")
Path = tuple[int, int | None]
"""Where one text sits: (message or choice index, part index or None for a string content)."""


@dataclass(frozen=True)
class Texts(Generic[Carrier]):
    """The texts of one carrier (a chat request or response, or a set of tensors).

    ``texts`` is what the answer is made of (PII reads and redacts these); ``classified`` what
    the classifiers read, None when they read ``texts``; ``put(edited)`` returns the carrier
    with ``edited`` (one per text, in order) in place of ``texts``."""

    texts: tuple[str, ...]
    classified: tuple[str, ...] | None
    put: Callable[[Sequence[str]], Carrier]


def _content_texts(owner: int, content: Any) -> list[tuple[Path, str]]:
    if isinstance(content, str):
        return [((owner, None), content)]
    if isinstance(content, list):
        return [
            ((owner, index), part["text"])
            for index, part in enumerate(content)
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
        ]
    return []


def _with_content(content: Any, part: int | None, text: str) -> Any:
    """``content`` with one text replaced: the string itself, or a copy of the parts list."""
    if part is None:
        return text
    parts = list(content)
    parts[part] = {**parts[part], "text": text}
    return parts


def _edited(
    messages: Mapping[int, Mapping[str, Any]], located: Sequence[tuple[Path, str]], edited: Sequence[str]
) -> dict[int, dict[str, Any]]:
    """Copies of the messages (by index) whose texts ``edited`` changes, with the new texts."""
    changed: dict[int, dict[str, Any]] = {}
    for ((owner, part), before), after in zip(located, edited, strict=True):
        if after != before:
            message = changed.get(owner) or messages[owner]
            changed[owner] = {**message, "content": _with_content(message["content"], part, after)}
    return changed


def chat_request_texts(request: Mapping[str, Any]) -> Texts[dict[str, Any]]:
    """The texts of a checked chat request (``serving/openai.py``'s ``chat_request``)."""
    messages: list[Any] = request["messages"]
    located = [
        found for index, message in enumerate(messages) for found in _content_texts(index, message.get("content"))
    ]
    last_user = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    classified: tuple[str, ...] = ()
    if last_user is not None:
        parts = [text for (owner, _), text in located if owner == last_user]
        classified = ("\n".join(parts),) if parts else ()
    texts = tuple(text for _, text in located)

    def put(edited: Sequence[str]) -> dict[str, Any]:
        copied = list(messages)
        for index, message in _edited(dict(enumerate(messages)), located, edited).items():
            copied[index] = message
        return {**request, "messages": copied}

    return Texts(texts, classified, put)


def chat_response_texts(response: Mapping[str, Any]) -> Texts[dict[str, Any]]:
    """The texts of an upstream's chat completion: every choice's ``message.content``. ``put``
    returns the completion with the edited texts; an edited choice's ``logprobs`` become null."""
    choices = response.get("choices")
    choices = choices if isinstance(choices, list) else []
    located = [
        found
        for index, choice in enumerate(choices)
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict)
        for found in _content_texts(index, choice["message"].get("content"))
    ]
    texts = tuple(text for _, text in located)

    def put(edited: Sequence[str]) -> dict[str, Any]:
        # An edited choice loses its logprobs: their tokens spell out the answer as the model
        # wrote it (a redacted email, say), so they would undo the edit.
        copied = list(choices)
        messages = {index: choices[index]["message"] for (index, _), _ in located}
        for index, message in _edited(messages, located, edited).items():
            copied[index] = {**choices[index], "message": message, "logprobs": None}
        return {**response, "choices": copied}

    return Texts(texts, None, put)


def is_text(array: np.ndarray) -> bool:
    """Whether a tensor is text to the filters: a BYTES tensor (numpy object, bytes or str)."""
    return datatype_of(array) == "BYTES"


def tensor_texts(tensors: Mapping[str, np.ndarray], direction: str) -> Texts[dict[str, np.ndarray]]:
    """The texts of a set of tensors: every element of every BYTES tensor, in tensor order.
    An input element that is not UTF-8 is the client's mistake: ``InvalidInput`` (400), since
    the policy reads text and cannot read it. A model's output element that is not UTF-8 is read
    with replacement characters (it is still filtered, never skipped)."""
    located: list[tuple[str, int]] = []
    texts: list[str] = []
    for name, array in tensors.items():
        if not is_text(array):
            continue
        for index, element in enumerate(array.ravel()):
            if isinstance(element, str):
                text = element
            else:
                data = bytes(element)
                try:
                    text = data.decode("utf-8")
                except UnicodeDecodeError as error:
                    if direction == "input":
                        raise InvalidInput(
                            f"input {name!r} element {index} is not UTF-8 text ({error.reason} at byte "
                            f"{error.start}); the safety policy reads BYTES inputs as text"
                        ) from None
                    text = data.decode("utf-8", "replace")
            located.append((name, index))
            texts.append(text)
    frozen = tuple(texts)

    def put(edited: Sequence[str]) -> dict[str, np.ndarray]:
        result = dict(tensors)
        for (name, index), before, after in zip(located, frozen, edited, strict=True):
            if after == before:
                continue
            array = result[name]
            if array is tensors[name]:  # copy each tensor once, as objects, so any text fits
                array = result[name] = tensors[name].astype(object)
            flat = array.reshape(-1)
            flat[index] = after if isinstance(flat[index], str) else after.encode("utf-8")
        return result

    return Texts(frozen, None, put)
