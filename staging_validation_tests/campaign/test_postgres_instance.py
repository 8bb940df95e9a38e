"""deploy/postgres/dagster.yaml: the PostgreSQL-backed instance, its credentials and its schema.

The campaign path itself (launch, sensors, hours, verdict) runs on it in test_daemon_e2e.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DEPLOY_INSTANCE = REPO / "deploy" / "postgres" / "dagster.yaml"
# Where the two instances differ by design: where things are stored.
STORAGE_SECTIONS = {"storage", "local_artifact_storage", "compute_logs"}


def _sections(path: Path) -> dict:
    return {key: value for key, value in yaml.safe_load(path.read_text()).items() if key not in STORAGE_SECTIONS}


def test_deploy_instance_runs_campaigns_like_the_repository_instance():
    """Same run queue limits, run monitoring and sensor settings: only the storage differs."""
    assert _sections(DEPLOY_INSTANCE) == _sections(REPO / "dagster.yaml")


def test_the_helm_values_queue_runs_like_the_repository_instance():
    queue = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_coordinator"]["config"]
    helm = yaml.safe_load((REPO / "deploy" / "helm" / "values.yaml").read_text())
    helm_queue = helm["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert helm_queue["tagConcurrencyLimits"] == queue["tag_concurrency_limits"]
    assert (helm_queue["maxConcurrentRuns"], helm_queue["dequeueIntervalSeconds"]) == (
        queue["max_concurrent_runs"], queue["dequeue_interval_seconds"])


def test_deploy_instance_takes_every_connection_setting_from_the_environment():
    connection = yaml.safe_load(DEPLOY_INSTANCE.read_text())["storage"]["postgres"]["postgres_db"]
    literal = {key: value for key, value in connection.items() if not (isinstance(value, dict) and "env" in value)}
    assert literal == {"scheme": "postgresql+psycopg2"}
    assert {value["env"] for key, value in connection.items() if key != "scheme"} == {
        "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"}


def test_an_unset_credential_variable_is_named_in_the_error(tmp_path, monkeypatch):
    for name, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432",
                        "DAGSTER_PG_USERNAME": "someone", "DAGSTER_PG_DB": "somewhere"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    (tmp_path / "dagster.yaml").write_text(DEPLOY_INSTANCE.read_text())
    with pytest.raises(Exception, match="DAGSTER_PG_PASSWORD"):
        dg.DagsterInstance.from_config(str(tmp_path))


def test_migrate_creates_the_schema_the_services_share(tmp_path, postgres_database):
    """`dagster instance migrate` on a fresh database, then two instance objects (two services) see the
    same runs."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DEPLOY_INSTANCE.read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    migrated = subprocess.run([str(BIN / "dagster"), "instance", "migrate"], cwd=REPO, env=env, check=False,
                              capture_output=True, text=True)
    assert migrated.returncode == 0, migrated.stderr[-3000:]

    @dg.op
    def hello():
        return 1

    @dg.job
    def hello_job():
        hello()

    with dg.DagsterInstance.from_config(str(home)) as writer, dg.DagsterInstance.from_config(str(home)) as reader:
        assert type(writer.run_storage).__name__ == "PostgresRunStorage"
        assert type(writer.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(writer.schedule_storage).__name__ == "PostgresScheduleStorage"
        result = hello_job.execute_in_process(instance=writer)
        assert result.success
        assert reader.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS
