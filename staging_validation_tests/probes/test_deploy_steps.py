"""Hour-0 deploy steps run as real commands: output bounded, exit code and duration kept, secrets masked,
a failure ends the sequence, a stored result is never run again."""

from __future__ import annotations

import json
import sys

import pytest

from staging_validation.config_files import ConfigError, validate_model
from staging_validation.probes.deploy_steps import (
    DeploySteps,
    deploy_steps_result,
    run_deploy_steps,
    run_step,
)
from staging_validation.schemas.timing import CampaignTiming


def python(code: str) -> str:
    return f"{sys.executable} -c '{code}'"


def test_a_succeeding_and_a_failing_step(tmp_path):
    marker = tmp_path / "migrated"
    deploy = DeploySteps(
        migrate_command=python(f"import pathlib; pathlib.Path(\"{marker}\").write_text(\"v42\"); print(\"migrated to v42\")"),
        deploy_command=python("import sys; print(\"rolling out\"); sys.stderr.write(\"image not found\\n\"); sys.exit(3)"),
    )
    results = tmp_path / "deploy" / "steps.json"
    runs = run_deploy_steps(deploy, results)
    assert [(r.step, r.exit_code, r.passed) for r in runs] == [("migrate", 0, True), ("deploy", 3, False)]
    assert runs[0].output == "migrated to v42\n" and marker.read_text() == "v42"
    assert "rolling out" in runs[1].output and "image not found" in runs[1].output  # stderr kept too
    assert runs[1].error == "exit code 3" and runs[1].duration_s > 0
    stored = json.loads(results.read_text())
    assert [entry["exit_code"] for entry in stored] == [0, 3]

    result = deploy_steps_result(runs, CampaignTiming(start_ms=runs[0].started_at_ms, hour_seconds=3600))
    assert not result.passed
    assert result.failures == [f"deploy step `{deploy.deploy_command}`: exit code 3"]
    assert [(r.probe, r.case, r.passed, r.outcome) for r in result.records] == [
        ("deploy_step", "migrate", True, "ok"), ("deploy_step", "deploy", False, "5xx")]


def test_stored_steps_are_not_run_again(tmp_path):
    counter = tmp_path / "runs"
    deploy = DeploySteps(migrate_command=python(f"open(\"{counter}\", \"a\").write(\"x\")"))
    results = tmp_path / "steps.json"
    first = run_deploy_steps(deploy, results)
    again = run_deploy_steps(deploy, results)  # a re-run of hour 0 reads what the first run stored
    assert counter.read_text() == "x" and again == first


def test_a_failing_migration_stops_before_the_deploy(tmp_path):
    deployed = tmp_path / "deployed"
    deploy = DeploySteps(migrate_command=python("import sys; sys.exit(1)"),
                         deploy_command=python(f"open(\"{deployed}\", \"w\")"))
    runs = run_deploy_steps(deploy, tmp_path / "steps.json")
    assert [(r.step, r.exit_code) for r in runs] == [("migrate", 1)] and not deployed.exists()


def test_output_is_bounded_to_its_head_and_tail(tmp_path):
    run = run_step("migrate", python("print(\"START\" + \"x\" * 100000 + \"END\")"), timeout_s=60, max_output_bytes=1000)
    assert run.output_bytes == 100009
    assert run.output.startswith("START") and run.output.endswith("END\n")
    assert "[... 99009 bytes omitted ...]" in run.output and len(run.output) < 1100


def test_a_command_that_hangs_is_killed_at_its_timeout(tmp_path):
    run = run_step("deploy", python("import time; print(\"waiting\", flush=True); time.sleep(600)"), timeout_s=1)
    assert run.exit_code is None and run.timed_out and run.error == "timed out after 1 s and was killed"
    assert run.output == "waiting\n" and run.duration_s < 60


def test_a_missing_program_is_a_failed_step(tmp_path):
    run = run_step("migrate", "/nonexistent/migrate --all", timeout_s=5)
    assert not run.passed and run.exit_code is None
    assert run.error == "cannot start: No such file or directory (/nonexistent/migrate)"


def test_campaign_secrets_printed_by_a_step_are_masked(tmp_path, monkeypatch):
    monkeypatch.setenv("STAGING_TOKEN", "tok-s3cret-value")
    run = run_step("deploy", python("import os; print(\"token=\" + os.environ[\"STAGING_TOKEN\"])"), timeout_s=30,
                   secrets=["tok-s3cret-value"])
    assert run.passed and run.output == "token=[redacted]\n"


@pytest.mark.parametrize(("field", "value"), [("migrate_command", "alembic upgrade 'head"),
                                              ("deploy_command", "   ")])
def test_a_command_that_cannot_be_split_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"deploy: {field}: Value error"):
        validate_model({field: value}, DeploySteps, "deploy")
