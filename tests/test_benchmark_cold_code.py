"""benchmarks/cold_code.py times cutover serve's gRPC handler, onnxruntime and numpy back to back and after
gaps slept or spun: each row must come from calls that answered, on the thread whose clock times them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks import serving as bench

SCRIPT = Path(bench.__file__).with_name("cold_code.py")


def test_each_work_is_timed_after_each_gap(tmp_path: Path) -> None:
    model = tmp_path / "classifier.onnx"
    bench.build_model(model)
    command = [sys.executable, str(SCRIPT), "--model", str(model), "--calls", "50", "--gaps-us", "0,100"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {(work, gap) for work in ("ModelInfer", "onnxruntime", "numpy") for gap in ("slept", "spun")}
    for cells in rows.values():
        assert cells[1] == "(1.0x)" and float(cells[0]) > 0 and float(cells[2]) > 0  # back to back, then after 100 us
