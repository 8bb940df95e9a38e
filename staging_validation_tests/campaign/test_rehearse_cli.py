"""`staging-validation rehearse` refuses bad input in one line, before starting anything."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import pytest

from staging_validation.campaign.rehearsal import instance_home


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


def test_a_dagster_home_without_the_instance_file_is_refused_naming_it(tmp_path):
    # Dagster would otherwise run a default instance without the run queue's lane limits.
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "STAGING_VALIDATION_DATA": str(tmp_path / "data"),
           "COLUMNS": "400"}
    result = subprocess.run([sys.executable, "-m", "staging_validation.cli", "rehearse"],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert f"{tmp_path / 'dagster.yaml'} does not exist" in result.stderr
    assert not (tmp_path / "data").exists()


def test_the_instance_storage_lives_in_dagster_home_whatever_the_working_directory(tmp_path, monkeypatch):
    home = instance_home(tmp_path / "home")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs() == []
    assert (home / "history" / "runs.db").is_file()
    assert list(elsewhere.iterdir()) == []
