"""What the SafetyPolicy and AlertRule loops keep per object is dropped when the object's loop
ends (the ModelDeployment's is in test_handlers.py), so memory follows the objects that exist."""

from __future__ import annotations

from typing import cast
from unittest.mock import MagicMock

import httpx
from prometheus_client import generate_latest

from cutover.operator import metrics
from cutover.operator.alerts import notify
from cutover.operator.alerts.handlers import AlertContext
from cutover.operator.kube import Kube
from cutover.operator.safety_handlers import SafetyContext

KEY = ("shop", "latency")
OTHER = ("shop", "errors")


def test_an_alertrule_that_is_gone_leaves_nothing_behind() -> None:
    notifier = notify.Notifier(cast(httpx.AsyncClient, MagicMock()), cast(Kube, MagicMock()))
    ctx = AlertContext(cast(Kube, MagicMock()), cast(httpx.AsyncClient, MagicMock()), notifier)
    wakes = {key: ctx.loops.start(key) for key in (KEY, OTHER)}
    for key in (KEY, OTHER):
        ctx.instances[key] = []
        ctx.memory[key] = notify.NotifyMemory()
        ctx.applied[key] = ("digest", 0.0)
        notifier.undelivered["/".join(key)] = []
        metrics.observe_alert(*key, ["Firing"], ["NoData"], sent=1, failed=1)
    ctx.forget(KEY, wakes[KEY])
    for kept in (ctx.loops.wakes, ctx.instances, ctx.memory, ctx.applied):
        assert list(kept) == [OTHER]
    assert list(notifier.undelivered) == ["shop/errors"]
    text = generate_latest().decode()
    assert 'alertrule="latency"' not in text and 'alertrule="errors"' in text
    ctx.forget(OTHER, wakes[OTHER])
    assert not ctx.instances and not ctx.memory and not ctx.applied and not notifier.undelivered


def test_a_safetypolicy_that_is_gone_leaves_nothing_behind() -> None:
    ctx = SafetyContext(cast(Kube, MagicMock()))
    wakes = {key: ctx.loops.start(key) for key in (KEY, OTHER)}
    for key in (KEY, OTHER):
        ctx.loops.supersede(key, "7", {})
        ctx.applied[key] = {"ConfigMap": ("digest", 0.0)}
    ctx.forget(KEY, wakes[KEY])
    for kept in (ctx.loops.wakes, ctx.loops.writes, ctx.applied):
        assert list(kept) == [OTHER]
