"""benchmarks/idle_penalty.py times cutover serve's gRPC handler, onnxruntime and numpy back to back and
after idle spells: each row must come from calls that answered, on the thread whose clock times them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import serving as bench

SCRIPT = Path(bench.__file__).with_name("idle_penalty.py")


def test_each_work_is_timed_after_each_gap(tmp_path: Path) -> None:
    model = tmp_path / "classifier.onnx"
    bench.build_model(model)
    command = [sys.executable, str(SCRIPT), "--model", str(model), "--calls", "50", "--gaps-us", "0,100"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split() for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"ModelInfer", "onnxruntime", "numpy"}
    for cells in rows.values():
        assert cells[2] == "(1.0x)" and float(cells[1]) > 0 and float(cells[3]) > 0  # back to back, then after 100 us
