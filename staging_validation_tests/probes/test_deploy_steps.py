"""Hour-0 deploy steps run as real commands: exit code, duration and bounded output kept, secrets masked,
a timeout kills the whole process group, a failure ends the sequence, a stored step is never run again."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from staging_validation.config_files import ConfigError, validate_model
from staging_validation.layout import CampaignLayout
from staging_validation.probes.deploy_steps import (
    DeploySettings,
    bounded_output,
    run_command,
    run_deploy_steps,
    stored_deploy_steps,
)
from staging_validation_tests.waiting import wait_until

CAMPAIGN = "deploy-test"


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def gone(pid: int) -> bool:
    """The process no longer runs (no such pid, or a zombie waiting for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_succeeding_step_then_a_failing_one_each_stored_once_with_exit_code_duration_and_output(tmp_path):
    marker = tmp_path / "migrated"
    deploy = DeploySettings(
        migrate_command=python(f"import pathlib; pathlib.Path({str(marker)!r}).write_text('v42'); "
                               "print('migrated to v42')"),
        deploy_command=python("import sys; print('rolling out', flush=True); sys.stderr.write('image not found\\n'); "
                              "sys.exit(3)"),
    )
    runs = run_deploy_steps(tmp_path, CAMPAIGN, deploy)
    assert [(r.step, r.exit_code, r.passed) for r in runs] == [("migrate", 0, True), ("deploy", 3, False)]
    assert runs[0].output == "migrated to v42\n" and marker.read_text() == "v42"
    assert runs[1].output == "rolling out\nimage not found\n"  # stderr kept too, in order
    assert runs[1].error == "exit code 3" and runs[1].duration_s > 0
    assert runs[1].describe() == f"deploy step `deploy` ({shlex.join(deploy.deploy_command or [])}): exit code 3"

    layout = CampaignLayout.of(tmp_path, CAMPAIGN)
    stored = json.loads(Path(layout.deploy_step_file("deploy")).read_text())
    assert (stored["argv"], stored["exit_code"], stored["output"]) == (deploy.deploy_command, 3, runs[1].output)
    assert stored_deploy_steps(tmp_path, CAMPAIGN) == runs


def test_a_second_call_reads_the_stored_result_and_never_runs_the_command_again(tmp_path):
    counter = tmp_path / "runs"
    deploy = DeploySettings(migrate_command=python(f"open({str(counter)!r}, 'a').write('x'); print('ran')"))
    first = run_deploy_steps(tmp_path, CAMPAIGN, deploy)
    again = run_deploy_steps(tmp_path, CAMPAIGN, deploy)  # a collector retry, a make-up, a re-run
    assert counter.read_text() == "x" and again == first and first[0].output == "ran\n"


def test_a_step_started_and_never_finished_is_interrupted_and_not_run_again(tmp_path):
    counter = tmp_path / "runs"
    deploy = DeploySettings(migrate_command=python(f"open({str(counter)!r}, 'a').write('x')"))
    mark = Path(CampaignLayout.of(tmp_path, CAMPAIGN).deploy_step_started_file("migrate"))
    mark.parent.mkdir(parents=True)
    mark.write_text("1700000000000")  # the validator was killed while the migration ran
    [run] = run_deploy_steps(tmp_path, CAMPAIGN, deploy)
    assert run.interrupted and not run.passed and run.exit_code is None and run.started_at_ms == 1700000000000
    assert "not run again" in (run.error or "") and not counter.exists()


def test_a_failing_migration_stops_before_the_deploy(tmp_path):
    deployed = tmp_path / "deployed"
    deploy = DeploySettings(migrate_command=python("import sys; sys.exit(1)"),
                            deploy_command=python(f"open({str(deployed)!r}, 'w')"))
    runs = run_deploy_steps(tmp_path, CAMPAIGN, deploy)
    assert [(r.step, r.exit_code) for r in runs] == [("migrate", 1)] and not deployed.exists()


def test_a_timeout_kills_the_whole_process_group_and_leaves_no_process_behind(tmp_path):
    child_pid = tmp_path / "child.pid"
    # The command starts a child of its own (as a deploy script does) and both hang.
    hang = python("import subprocess, sys, time; "
                  "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
                  f"open({str(child_pid)!r}, 'w').write(str(child.pid)); print('waiting', flush=True); "
                  "time.sleep(600)")
    run = run_command("deploy", hang, timeout_s=3)
    assert run.timed_out and run.exit_code is None and not run.passed
    assert run.error == "timed out after 3 s; its process group was killed"
    assert run.output == "waiting\n"
    pid = int(child_pid.read_text())
    wait_until(lambda: gone(pid), 30, f"the exit of the command's child {pid} after the timeout")


def test_a_command_that_cannot_start_is_a_failed_step(tmp_path):
    run = run_command("migrate", ["/nonexistent/migrate", "--all"], timeout_s=5)
    assert not run.passed and run.exit_code is None and not run.timed_out
    assert run.error == "cannot start '/nonexistent/migrate': No such file or directory"


def test_campaign_secrets_printed_by_a_step_are_masked(monkeypatch):
    monkeypatch.setenv("STAGING_TOKEN", "tok-s3cret-value")
    run = run_command("deploy", python("import os; print('token=' + os.environ['STAGING_TOKEN'])"), timeout_s=30,
                      secrets=["tok-s3cret-value", ""])
    assert run.passed and run.output == "token=[redacted]\n"


def test_output_is_bounded_to_its_head_and_tail():
    run = run_command("migrate", python("print('START' + 'x' * 100000 + 'END')"), timeout_s=60,
                      max_output_bytes=1000)
    assert run.output_bytes == 100009
    assert run.output.startswith("START" + "x" * 495) and run.output.endswith("x" * 496 + "END\n")
    assert "\n[... 99009 bytes omitted ...]\n" in run.output and len(run.output) < 1100


def test_a_secret_across_the_cut_is_kept_whole_and_masked():
    secret = b"s3cret-token-value"
    for offset in range(-len(secret), 2):  # the secret straddling the head's end at every position
        data = b"a" * (500 + offset) + secret + b"b" * 5000 + secret + b"c" * 500
        text = bounded_output(io.BytesIO(data), len(data), 1000, [secret])
        assert "s3cret" not in text and "value" not in text.replace("[redacted]", ""), offset


@pytest.mark.parametrize(("settings", "problem"), [
    ({"migrate_command": []}, "migrate_command: an empty argv names no program"),
    ({"deploy_command": ["  "]}, "deploy_command: the program (argv[0]) is empty"),
    ({"timeout_s": 0}, "timeout_s: 0 must be a positive number of seconds"),
    ({"deploy_command": "alembic upgrade head"}, "deploy_command: Input should be a valid list"),
])
def test_stored_settings_that_cannot_run_name_the_field(settings, problem):
    with pytest.raises(ConfigError, match=re.escape(f"deploy: {problem}")):
        validate_model(settings, DeploySettings, "deploy")


def test_no_command_configured_runs_nothing(tmp_path):
    assert run_deploy_steps(tmp_path, CAMPAIGN, DeploySettings()) == []
    assert not os.path.exists(CampaignLayout.of(tmp_path, CAMPAIGN).deploy_steps_dir)
