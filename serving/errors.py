"""Every way a serving request can fail, one named error each, carrying the HTTP status it answers
with: the raise site says what went wrong, the error says how the client hears it.

=================  ======  ===========================================================================
error              status  when
=================  ======  ===========================================================================
InvalidInput       400     the request (body, tensors, chat messages, a parameter the server does not
                           honour) or the model refuses the input
NotAllowed         403     what the server will not do here: load or unload models (the operator owns them)
UnknownEncoding    415     a request Content-Encoding that cannot be decoded here
ModelNotFound      404     an unknown model name or version
NotSupported       404     the model cannot do what was asked (chat completions on a tensor model)
SafetyBlocked      422     the SafetyPolicy refuses the request or the answer (``blockMessage``)
CrisisEscalated    422     an inference request or answer the crisis filter escalated (``responseMessage``)
ExplanationTimeout 422     an explanation that needs more than the server's ``--explain-timeout``
TooManyRequests    429     the upstream rate-limits us (``Retry-After`` as the upstream said, else 1)
InferenceError     500     the model failed, or answered what the protocol cannot carry
NotExplainable     501     an explain request to a model that cannot be explained (llm, remote Triton)
UpstreamError      502     an upstream (Triton, an LLM server, the previous version) failed, timed out,
                           or refused cutover's own credentials
ModelNotReady      503     the model is loading or failed to load (``Retry-After: 1``)
Overloaded         503     too many requests in progress or queued, here or upstream (``Retry-After``:
                           the upstream's, else 1)
SafetyUnavailable  503     a SafetyPolicy is required and cannot be applied (no valid policy yet, or
                           a filter failed and the policy is ``failClosed``); never an unfiltered answer
=================  ======  ===========================================================================

The body is ``{"error": "<message>"}`` (``serving/http.py`` writes it), and OpenAI's error object
on ``/v1`` routes (``serving/openai.py``). A 500 is kept for a
model that fails, so the rollout's analysis sees a broken revision; input a client got wrong is
always a 4xx. :func:`upstream_failure` maps an upstream's status to one of these, for every
adapter that forwards. Names follow the Open Inference Protocol servers (KServe's and MLServer's
``errors.py``) where they have one, HTTP's vocabulary otherwise.
"""

from __future__ import annotations

from typing import ClassVar


class ServingError(Exception):
    """A request the serving runtime cannot answer. ``status`` is the HTTP status it answers with;
    ``retry_after`` the seconds a client should wait before trying again (the class's default
    unless given), None when retrying the same request cannot help."""

    status: ClassVar[int] = 500
    retry_after: int | None = None

    def __init__(self, message: str = "", *, retry_after: int | None = None) -> None:
        super().__init__(message)
        if retry_after is not None:
            self.retry_after = retry_after


class InvalidInput(ServingError):
    """The request, or the model, refuses the input as given (malformed JSON or tensors, inputs
    that do not match the schema, a chat request without messages). Never a model failure."""

    status = 400


class NotAllowed(ServingError):
    """A request the server understands and will not carry out: loading or unloading models
    (Triton's model repository extension), since the operator decides which revision a pod
    serves. Retrying cannot help."""

    status = 403


class UnknownEncoding(ServingError):
    """The request body's Content-Encoding is one that cannot be decoded here."""

    status = 415


class ModelNotFound(ServingError):
    """No model of that name or version is served here."""

    status = 404


class NotSupported(ServingError):
    """The model cannot do what was asked: chat completions on a model that takes tensors."""

    status = 404


class SafetyBlocked(ServingError):
    """The SafetyPolicy refuses to answer: a filter whose action is ``block`` found something in
    the request or in the model's answer. The message is the policy's ``blockMessage``, all the
    client hears (what was found is counted and audited, never echoed). A 4xx: the revision did
    not fail."""

    status = 422


class CrisisEscalated(SafetyBlocked):
    """The crisis filter escalated an inference request or its answer: the message is the
    policy's ``responseMessage`` (a chat completion answers it as the assistant instead)."""


class ExplanationTimeout(ServingError):
    """An explanation passed the server's time limit (``--explain-timeout``) after ``evaluations``
    model rows: the request asked for more than the limit allows (rows, samples, background).
    A 4xx: neither a failure of the revision nor one that retrying the same request can help."""

    status = 422

    def __init__(self, message: str = "", *, evaluations: int = 0) -> None:
        super().__init__(message)
        self.evaluations = evaluations


class NotExplainable(ServingError):
    """The explain endpoint cannot explain this model: token-level attributions of language
    models are not offered, and a remote Triton model's perturbed rows would be its live traffic."""

    status = 501


class TooManyRequests(ServingError):
    """The upstream rate-limits this server (it answered 429): the client hears the same, with
    the upstream's ``Retry-After``, and may retry then. Not a failure of the revision."""

    status = 429
    retry_after = 1


class InferenceError(ServingError):
    """The model failed on a request it accepted, or answered with a type the protocol cannot carry."""

    status = 500


class UpstreamError(ServingError):
    """The server this model is forwarded to (Triton, an OpenAI-compatible LLM server, another
    revision) failed or could not be reached."""

    status = 502


class ModelNotReady(ServingError):
    """The model is still loading, or failed to load (the message says why)."""

    status = 503
    retry_after = 1


class Overloaded(ServingError):
    """Load shedding: more requests in progress or queued than the server takes."""

    status = 503
    retry_after = 1


class SafetyUnavailable(ServingError):
    """The request cannot be filtered as its SafetyPolicy demands, so it is refused rather than
    answered unfiltered: the server was started with a policy file and has no valid policy yet,
    or a filter failed on this request and the policy is ``failClosed``. The message says which."""

    status = 503


CLIENT_ERRORS = frozenset({400, 413, 422})
"""Upstream statuses that mean the request itself was refused: the client's input, passed on as 400.
Not 404: the upstream model (or path) that cutover names is missing, a deployment fault."""
CREDENTIAL_ERRORS = frozenset({401, 403, 407})


def upstream_failure(upstream: str, status: int, message: str, retry_after: str | None = None) -> ServingError:
    """The error to answer when ``upstream`` (named in the message) answered ``status`` with
    ``message``, and ``Retry-After: retry_after`` (seconds; an HTTP date or nothing reads as 1).

    Overload stays overload: 429 is ``TooManyRequests``, 503 ``Overloaded``, each with the
    upstream's Retry-After. A refusal of the request (``CLIENT_ERRORS``) is the client's
    ``InvalidInput``; a refusal of cutover's own credentials, and everything else, is an
    ``UpstreamError`` (502) that names the cause: neither is the client's fault.
    """
    detail = message or "no message"
    wait = int(retry_after) if retry_after is not None and retry_after.strip().isdigit() else None
    if status == 429:
        return TooManyRequests(f"{upstream} is rate-limiting (429): {detail}", retry_after=wait)
    if status == 503:
        return Overloaded(f"{upstream} is unavailable or overloaded (503): {detail}", retry_after=wait)
    if status in CLIENT_ERRORS:
        return InvalidInput(f"{upstream} refused the request ({status}): {detail}")
    if status in CREDENTIAL_ERRORS:
        return UpstreamError(f"{upstream} refused cutover's credentials ({status}): {detail}")
    return UpstreamError(f"{upstream} failed ({status}): {detail}")
