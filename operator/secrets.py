"""Reading one key of a Secret that a resource names (``SecretKeyRef``): a Prometheus bearer
token, a notification URL. The value is read at each use, so a rotated Secret takes effect at
the next one, and every way it can be unusable is one :class:`SecretUnavailable` whose message
names the field, the Secret and what is wrong, ready for a status condition or an Event.
"""

from __future__ import annotations

import base64
import binascii

from cutover.api.v1alpha1.base import SecretKeyRef
from cutover.serving.kube import ApiError, Kube


class SecretUnavailable(Exception):
    """The Secret named by a ``SecretKeyRef`` cannot be read, lacks the key, or holds no text."""


async def secret_text(kube: Kube | None, namespace: str, ref: SecretKeyRef, field: str) -> str:
    """The text under ``ref.key`` of the Secret ``namespace/ref.name``, stripped of surrounding
    whitespace. ``field`` is the spec path that names the Secret (``analysis.prometheus.
    bearerTokenSecretRef``), said first in every error. Raises :class:`SecretUnavailable` when
    there is no client, the Secret is missing or unreadable, or the key is absent, not UTF-8 or empty."""
    where = f"{field}: Secret {namespace}/{ref.name}"
    if kube is None:
        raise SecretUnavailable(f"{where}: the operator has no Kubernetes client to read it")
    try:
        secret = await kube.get("v1", "Secret", namespace, ref.name)
    except ApiError as err:
        raise SecretUnavailable(f"{where}: {'not found' if err.status == 404 else err}") from err
    encoded = (secret.get("data") or {}).get(ref.key)
    if encoded is None:
        raise SecretUnavailable(f"{where} has no key {ref.key!r}")
    try:
        text = base64.b64decode(encoded, validate=True).decode().strip()
    except (binascii.Error, UnicodeDecodeError) as err:
        raise SecretUnavailable(f"{where} key {ref.key!r} is not UTF-8 text") from err
    if not text:
        raise SecretUnavailable(f"{where} key {ref.key!r} is empty")
    return text
