"""The AlertRule builtin ``inputDrift`` (issue 20, item 4): Prometheus' own engine (``promtool test
rules``) evaluates its PromQL, per revision and for the rendered rule's every revision at once, to
the population stability index the rollout analysis computes from the same rows."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import yaml

from cutover.analysis.drift import population_stability_index
from cutover.operator.alerts.queries import BY_REVISION, builtin_query

from .test_alert_render import promtool

PER_MINUTE = {  # revision -> feature -> rows per bin per minute
    "c0ffee00": {"age": [30, 10, 5, 5], "income": [12, 13, 12, 13]},
    "ba5e1111": {"age": [12, 12, 13, 13], "income": [0, 25, 25, 0]},
}
REFERENCE = {"age": [0.25, 0.25, 0.25, 0.25], "income": [0.0, 0.5, 0.5, 0.0]}
WINDOW_MINUTES = 5
NEAREST = 1e-9


def series() -> list[dict[str, str]]:
    out = []
    for revision, features in PER_MINUTE.items():
        for feature, rows in features.items():
            for index, per_minute in enumerate(rows):
                labels = f'namespace="shop",model="ranker",revision="{revision}",feature="{feature}",bin="{index}"'
                out.append({"series": f"cutover_input_feature_rows_total{{{labels}}}", "values": f"0+{per_minute}x20"})
                # Two pods of the revision export the same training shares.
                share = REFERENCE[feature][index]
                for pod in ("a", "b"):
                    out.append(
                        {"series": f'cutover_input_feature_reference{{{labels},pod="{pod}"}}', "values": f"{share}x20"}
                    )
    return out


def expected(revision: str) -> float:
    return max(
        population_stability_index(np.array(rows) * WINDOW_MINUTES, REFERENCE[feature])
        for feature, rows in PER_MINUTE[revision].items()
    )


def rounded(value: float) -> float:
    """``value`` as PromQL's ``round(v, 1e-9)`` gives it: the engine sums in no fixed order, so
    the last bits of the unrounded PSI vary between runs and promtool compares exactly."""
    inverse = 1.0 / NEAREST
    return math.floor(value * inverse + 0.5) / inverse


def query(labels: dict[str, str], by: tuple[str, ...] = ()) -> str:
    return f"round({builtin_query('inputDrift', 'gateway', labels, f'{WINDOW_MINUTES}m', by)}, {NEAREST})"


def test_promtool_evaluates_the_query_to_the_analysis_psi(tmp_path: Path) -> None:
    labels = {"namespace": "shop", "model": "ranker"}
    tests = [
        {
            "expr": query(labels | {"revision": revision}),
            "eval_time": "15m",
            "exp_samples": [{"labels": "{}", "value": rounded(expected(revision))}],
        }
        for revision in PER_MINUTE
    ]
    tests.append(
        {
            "expr": query(labels, BY_REVISION),
            "eval_time": "15m",
            "exp_samples": [
                {
                    "labels": f'{{namespace="shop",model="ranker",revision="{revision}"}}',
                    "value": rounded(expected(revision)),
                }
                for revision in PER_MINUTE
            ],
        }
    )
    assert expected("c0ffee00") > 0.2 > expected("ba5e1111")  # a drifted revision and a steady one
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": []}))
    document = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series(), "promql_expr_test": tests}],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(document))
    done = subprocess.run([promtool(), "test", "rules", "test.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
