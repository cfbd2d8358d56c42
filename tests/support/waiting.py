"""One way to wait: poll a condition until it holds, and say what was awaited when it never does.

A test waits for the condition a pause would stand for, never for a fixed time: a fixed sleep is
too short on a loaded machine and too long everywhere else. A sleep that is the behaviour under
test (a delay of a fake upstream, a window in which nothing may change) is not a wait and does not
belong here.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """A condition did not hold within its timeout.

    An AssertionError, so that a test that waits in vain is reported as failed, not as broken."""


def wait_until(
    condition: Callable[[], T | None],
    timeout: float = 60,
    what: str = "the condition",
    interval: float = 0.25,
    *,
    detail: Callable[[], str] | None = None,
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns a truthy value; return that value
    (None, False, 0 and empty collections mean "not yet").

    ``condition`` is called at least once, and once more after the deadline, so a slow call near
    the end still counts. An exception it raises propagates: a condition that can fail for a while
    (a server still starting) catches what it expects itself.

    Raises:
        TimedOut: after ``timeout`` seconds, with ``what`` in the message (``timed out after 60 s
            waiting for v1 Ready``) and, when given, ``detail()``, such as the last status seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            raise TimedOut(f"{message}: {detail()}" if detail is not None else message)
        time.sleep(interval)


def answers(url: str, process: subprocess.Popen[bytes] | None = None, what: str = "the server") -> bool:
    """Whether a GET of ``url`` answers 200 now: the condition to wait for a server to be ready.

    Raises:
        AssertionError: ``process`` (the server behind ``url``, called ``what``) has exited, so
            waiting on would be in vain.
    """
    if process is not None and process.poll() is not None:
        raise AssertionError(f"{what} exited with {process.returncode}")
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False
