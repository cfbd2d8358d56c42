"""The chart's operator shards: one Deployment per shard, each passing `cutover operator` its
shard and its own Lease, every Lease granted by the leader election Role; no shards renders the
single operator as before, and shards that would overlap fail to render."""

from __future__ import annotations

import subprocess

import pytest

from cutover.operator import cli

from .test_alert_render_chart import rendered


def test_each_shard_runs_its_own_operator_on_its_own_lease() -> None:
    values = (
        "operator.shards[0].name=a",
        "operator.shards[0].default=true",
        "operator.shards[1].name=gpu",
        "operator.shards[1].namespaces={vision,llm}",
    )
    docs = rendered(*values)
    deployments = {
        d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment" and "-operator" in d["metadata"]["name"]
    }
    assert sorted(deployments) == ["cutover-cutover-operator-a", "cutover-cutover-operator-gpu"]
    parsed = {}
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        parsed[name] = cli.parser().parse_args(template["spec"]["containers"][0]["args"])
        # Two Deployments whose selectors matched each other's pods would fight over them.
        shard = deployment["spec"]["selector"]["matchLabels"]["cutover.dev/shard"]
        assert template["metadata"]["labels"]["cutover.dev/shard"] == shard == name.rsplit("-", 1)[1]
    a, gpu = parsed["cutover-cutover-operator-a"], parsed["cutover-cutover-operator-gpu"]
    assert (a.shard, a.default_shard, a.namespace) == ("a", True, [])
    assert (gpu.shard, gpu.default_shard, gpu.namespace) == ("gpu", False, ["vision", "llm"])
    leases = [a.leader_elect_resource_name, gpu.leader_elect_resource_name]
    assert leases == ["cutover-cutover-operator-a", "cutover-cutover-operator-gpu"]
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election"))
    granted = next(rule for rule in role["rules"] if "resourceNames" in rule)
    assert granted["resourceNames"] == leases


def test_without_shards_one_operator_serves_every_object() -> None:
    docs = rendered()
    deployments = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-operator")]
    assert len(deployments) == 1
    args = cli.parser().parse_args(deployments[0]["spec"]["template"]["spec"]["containers"][0]["args"])
    assert args.shard is None and args.leader_elect_resource_name == "cutover-cutover-operator"


@pytest.mark.parametrize(
    "values",
    [
        ("operator.shards[0].name=a", "operator.shards[1].name=a"),
        (
            "operator.shards[0].name=a",
            "operator.shards[0].default=true",
            "operator.shards[1].name=b",
            "operator.shards[1].default=true",
        ),
        ("operator.shards[0].default=true",),
    ],
    ids=["a name twice", "two defaults", "no name"],
)
def test_shards_that_would_overlap_fail_to_render(values: tuple[str, ...]) -> None:
    with pytest.raises(subprocess.CalledProcessError) as refused:
        rendered(*values)
    assert "operator.shards" in refused.value.stderr
