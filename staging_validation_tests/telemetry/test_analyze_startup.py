"""`analyze` starts light: importing its command loads neither numpy nor Arrow, and analysing a log never
loads Arrow or pandas (DuckDB streams the log; numpy only counts its lines, imported in the counting
thread while DuckDB reads). Checked in a fresh interpreter, whose modules are only what the command loaded."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "pyarrow", "pandas")

ANALYZE_IN_PROCESS = f"""
import json, sys
from click.testing import CliRunner
from staging_validation.telemetry.cli import analyze
at_start = sorted(m for m in {HEAVY!r} if m in sys.modules)
result = CliRunner().invoke(analyze, [sys.argv[1], "--json"])
print(json.dumps({{"exit_code": result.exit_code, "output": result.output, "at_start": at_start,
                  "after": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def test_analyze_starts_without_numpy_or_arrow_and_runs_without_arrow(tmp_path):
    log = tmp_path / "staging.log"
    lines = [
        {"level": 30, "time": 1_795_392_000_000, "reqId": "sv-1", "msg": "request completed",
         "req": {"url": "/chat", "method": "POST"}, "res": {"statusCode": 200}, "duration_ms": 120.5},
        {"level": 30, "time": 1_795_392_000_100, "reqId": "r-2", "msg": "[Staging] Governor pass 2/3",
         "status": "passed", "attempt": 2, "max_attempts": 3, "violation_type": "none", "regen_in_ms": 40.0},
        {"level": 50, "time": 1_795_392_000_200, "msg": "boom"},
    ]  # fmt: skip
    log.write_text("".join(json.dumps(line) + "\n" for line in lines) + "not json\n")
    completed = subprocess.run([sys.executable, "-c", ANALYZE_IN_PROCESS, str(log)],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["exit_code"] == 0, report["output"]
    metrics = json.loads(report["output"])
    assert metrics["lines"] == {"total": 4, "unparsed": 1, "readable": 3, "readable_share": 0.75}
    assert (metrics["requests"]["completed"], metrics["error_lines"]) == (1, 1)
    assert report["at_start"] == []
    assert report["after"] == ["numpy"]
