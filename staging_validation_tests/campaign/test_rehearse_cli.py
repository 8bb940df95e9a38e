"""`staging-validation rehearse` refuses bad input in one line, before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("arguments", "named"),
    [(["--campaign", "../escape"], "campaign id '../escape'"),
     (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'")],
)
def test_bad_rehearsal_arguments_exit_1_with_the_problem_named(tmp_path, arguments, named):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "STAGING_VALIDATION_DATA": str(tmp_path / "data"),
           "COLUMNS": "400"}
    result = subprocess.run([sys.executable, "-m", "staging_validation.cli", "rehearse", *arguments],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert named in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "data").exists()
