"""Pure helpers of the kopf handlers."""

from __future__ import annotations

from unittest.mock import MagicMock

from cutover.operator.handlers import Context, annotation_writer, latest


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


def test_latest_prefers_our_write_until_the_watch_catches_up() -> None:
    ctx = Context(kube=MagicMock(), verdicts=MagicMock())
    stale = {"metadata": {"namespace": "ns", "name": "m", "resourceVersion": "41"}, "status": {"phase": "Pending"}}
    written = {"metadata": {"namespace": "ns", "name": "m", "resourceVersion": "42"}, "status": {"phase": "Healthy"}}
    ctx.written[("ns", "m")] = ("41", written)
    assert latest(ctx, stale)["status"]["phase"] == "Healthy"  # type: ignore[arg-type]
    echoed = {**written, "metadata": {**written["metadata"], "resourceVersion": "43"}}
    assert latest(ctx, echoed)["metadata"]["resourceVersion"] == "43"  # type: ignore[arg-type]
