"""Where a serving process gets its SafetyPolicy: the file ``cutover serve --safety-policy FILE``
names (the operator's ConfigMap ``cutover-safety-<policy>``, key ``policy.json``, mounted into
the pod), and the crisis webhook's URL from ``--safety-secrets-dir`` (``escalation-url``, the
operator's copy of the Secret that ``urlSecretRef`` names).

The file is polled (every 2 s by default) and a changed policy is applied to the next request,
with no restart. kubelet updates a ConfigMap volume by swapping a symlink (``..data``) to a new
directory, so the path is opened afresh on every poll (following the link) and what decides a
change is the content, not the inode or mtime; the URL file is part of it, so a rotated Secret
reaches the escalation client too. An invalid, unreadable or missing file keeps the last good
policy (logged, counted in ``cutover_safety_policy_load_failures_total`` once per distinct bad
content); when there never was a good one, the guard has none and serving fails closed
(``SafetyUnavailable``, readiness not ready) until one arrives.

Compiling a policy builds its detectors, which may train a classifier the first time (about a
second per filter): it runs on a worker thread, so requests go on under the previous policy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from cutover.api.contract import SAFETY_ESCALATION_URL_KEY

from .guard import Guard
from .policy import Policy, PolicyError, compile_policy

log = logging.getLogger("cutover.serving.safety")

POLL_SECONDS = 2.0
"""How often the policy file is read for a change."""


def parse(content: bytes, path: Path | str = "<policy>") -> Any:
    """The policy object in ``content``: JSON, as the operator renders it, or YAML (a manifest as
    written for ``kubectl apply``, for ``cutover safety check``). Raises ``PolicyError``."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError(f"{path} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError:
        pass
    except RecursionError:
        raise PolicyError(f"{path} is nested too deeply to be a SafetyPolicy") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as error:
        raise PolicyError(f"{path} is neither JSON nor YAML: {error}") from None


def load(path: Path, secrets_dir: Path | None = None) -> Policy:
    """Read and compile the policy at ``path`` (and its escalation URL from ``secrets_dir``).
    Raises ``PolicyError`` with the reason, naming the file."""
    content, url = _read(path, secrets_dir)
    return _compile(path, content, url)


def _read(path: Path, secrets_dir: Path | None) -> tuple[bytes, str | None]:
    try:
        content = path.read_bytes()
    except OSError as error:
        raise PolicyError(f"cannot read the safety policy {path}: {error.strerror or error}") from None
    url = None
    if secrets_dir is not None:
        try:
            url = (secrets_dir / SAFETY_ESCALATION_URL_KEY).read_text(encoding="utf-8").strip() or None
        except (OSError, UnicodeDecodeError):
            url = None
    return content, url


def _compile(path: Path, content: bytes, url: str | None) -> Policy:
    try:
        return compile_policy(parse(content, path), url)
    except PolicyError as error:
        raise PolicyError(f"{path}: {error}") from None


class PolicyFile:
    """Follows one policy file for ``guard``: :meth:`poll` reads it and applies a changed policy
    (or refuses a bad one); :meth:`run` polls every ``interval`` seconds until cancelled."""

    def __init__(
        self, guard: Guard, path: Path, secrets_dir: Path | None = None, interval: float = POLL_SECONDS
    ) -> None:
        self.guard = guard
        self.path = path
        self.secrets_dir = secrets_dir
        self.interval = interval
        self._seen: bytes | None = None
        """A digest of the content and URL last acted on (applied or refused)."""

    async def poll(self) -> bool:
        """Read the file; apply its policy if it changed and is valid, refuse it (once per
        distinct content) if not. Returns whether a new policy was applied."""
        try:
            content, url = _read(self.path, self.secrets_dir)
        except PolicyError as error:
            seen = b"missing"
            if seen != self._seen:
                self._seen = seen
                self.guard.refuse(str(error))
            return False
        seen = hashlib.sha256(content + b"\0" + (url or "").encode()).digest()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            policy = await asyncio.to_thread(_compile, self.path, content, url)
        except PolicyError as error:
            self.guard.refuse(str(error))
            return False
        except Exception as error:  # a builder bug must not stop the polling
            log.exception("safety policy %s: compiling failed", self.path)
            self.guard.refuse(f"{self.path}: compiling failed: {type(error).__name__}: {error}")
            return False
        self.guard.apply(policy)
        return True

    async def run(self) -> None:
        """Poll until cancelled (the first poll at once)."""
        while True:
            await self.poll()
            await asyncio.sleep(self.interval)
