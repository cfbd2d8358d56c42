"""Pure helpers of the kopf handlers."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest.mock import MagicMock

from cutover.operator.handlers import Context, annotation_writer, firing_actions
from cutover.operator.verdicts import PrometheusVerdicts


def test_annotation_writer_names_the_field_manager() -> None:
    body = {
        "metadata": {
            "managedFields": [
                {"manager": "argocd-controller", "fieldsV1": {"f:spec": {}}},
                {
                    "manager": "kubectl-annotate",
                    "fieldsV1": {"f:metadata": {"f:annotations": {"f:cutover.dev/rollback": {}}}},
                },
            ]
        }
    }
    assert annotation_writer(body, "cutover.dev/rollback") == "kubectl-annotate"
    assert annotation_writer(body, "cutover.dev/pause") == ""


def test_a_loop_that_ends_leaves_nothing_of_its_object_behind() -> None:
    """Four maps kept per object (wake-ups, status writes, applied children, verdict runs) and
    only two were dropped when the object's loop ended: a deleted ModelDeployment's rollout
    evidence and child digests stayed in memory for the life of the process."""
    verdicts = PrometheusVerdicts(MagicMock())
    verdicts.runs["uid-1"] = verdicts.finished["uid-1"] = MagicMock()
    verdicts.watches["uid-1"] = MagicMock()
    verdicts.runs["uid-2"] = MagicMock()
    ctx = Context(kube=MagicMock(), verdicts=verdicts)
    wake = ctx.loops.start(("ns", "m"))
    ctx.loops.supersede(("ns", "m"), "41", {})
    ctx.applied[("ns", "m")] = {("Deployment", "m-abc"): ("digest", 0.0)}
    ctx.forget(("ns", "m"), "uid-1", wake)
    assert not ctx.loops.wakes and not ctx.loops.writes and not ctx.applied
    assert not verdicts.finished and not verdicts.watches and list(verdicts.runs) == ["uid-2"]


def test_a_loop_that_ends_after_its_name_was_reused_keeps_the_new_objects_memory() -> None:
    ctx = Context(kube=MagicMock(), verdicts=MagicMock())
    old_wake = asyncio.Event()
    new_wake = ctx.loops.start(("ns", "m"))
    ctx.loops.supersede(("ns", "m"), "7", {})
    ctx.applied[("ns", "m")] = {}
    ctx.forget(("ns", "m"), "old-uid", old_wake)
    assert ctx.loops.wakes[("ns", "m")] is new_wake and ("ns", "m") in ctx.loops.writes and ("ns", "m") in ctx.applied
    ctx.verdicts.drop.assert_called_once_with("old-uid")


FIRED = "2026-12-01T03:00:00Z"


def instance(target: str, revision: str, state: str, fired: str | None = FIRED, **more: Any) -> dict[str, Any]:
    return {"target": target, "revision": revision, "state": state, "firedAt": fired, **more}


def test_firing_instances_of_an_acting_rule_become_alert_actions_for_their_targets() -> None:
    condition = {"operator": ">", "threshold": 1.5, "relativeTo": "stable"}
    spec = {"action": "rollback", "metric": {"builtin": "errorRate"}, "condition": condition}
    status = {
        "instances": [
            instance("shop/ranker", "c0ffee00", "Firing", value=3.14159),
            instance("shop/ranker", "ba5e1111", "Pending", None, value=1.6),
            instance("shop/search", "d00d0000", "Silenced"),
            instance("other/ranker", "c0ffee00", "Firing"),
            instance("shop/ranker", "e0e0e0e0", "Firing", "not a time"),
        ]
    }
    actions = firing_actions("shop", "errors", spec, status)
    assert list(actions) == [("shop", "ranker")]
    (action,) = actions[("shop", "ranker")]
    assert (action.rule, action.action, action.revision) == ("errors", "rollback", "c0ffee00")
    assert action.id == "2026-12-01T03:00:00+00:00"
    assert action.reason == "errorRate 3.142 x stable > 1.5"
    assert firing_actions("shop", "errors", {**spec, "action": "none"}, status) == {}
    assert firing_actions("shop", "errors", spec, {}) == {}
