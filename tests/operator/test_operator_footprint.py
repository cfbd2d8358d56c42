"""What the operator process loads: its resident memory is its cost per cluster, so heavy
modules it does not need stay out (benchmarks/operator_scale.py measures the memory itself)."""

from __future__ import annotations

import subprocess
import sys


def test_the_operator_does_not_import_scipy_stats() -> None:
    """scipy.stats (46 MB resident, 1.3 s to import) came in for one chi-square quantile, which
    scipy.special.chdtri gives."""
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, cutover.operator.main; print(sorted(m for m in sys.modules if m.startswith('scipy.stats')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]"
