"""Launch validation, partition keys from users, and the Parquet layout of stored hours."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from staging_validation.campaign.jobs import CampaignLaunchConfig, NotificationConfig
from staging_validation.campaign.partitions import campaign_partitions
from staging_validation.campaigns import load_campaign_state
from staging_validation.definitions import build_definitions

LAUNCH = "register_campaign_op"


def launch(defs: dg.Definitions, instance: dg.DagsterInstance, **config) -> dg.ExecuteInProcessResult:
    return defs.get_job_def("start_campaign").execute_in_process(
        instance=instance, run_config={"ops": {LAUNCH: {"config": {"telemetry_path": "/nonexistent/log", **config}}}},
        raise_on_error=False,
    )


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(str(e.event_specific_data.error.message if hasattr(e.event_specific_data, "error") else e.message)
                    for e in result.all_events if e.is_step_failure)


def test_start_campaign_registers_the_campaign_and_its_partition(tmp_path):
    defs = build_definitions(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = launch(defs, instance, campaign="night-1", hours=12, hour_seconds=60)
        assert result.success
        assert instance.get_dynamic_partitions(campaign_partitions.name) == ["night-1"]
        state = load_campaign_state(tmp_path, "night-1")
        assert (state.planned_hours, state.timing.hour_seconds, state.status) == (12, 60, "active")
        assert state.settings["telemetry"] == {"path": "/nonexistent/log"}
        # A second launch with the same id would mix two campaigns' data: refused, first one intact.
        again = launch(defs, instance, campaign="night-1")
        assert not again.success and "already registered" in failure_text(again)
        assert load_campaign_state(tmp_path, "night-1").planned_hours == 12


@pytest.mark.parametrize(
    ("config", "named"),
    [({"campaign": "../escape"}, "campaign id '../escape'"),
     ({"campaign": "a/b"}, "campaign id 'a/b'"),
     ({"campaign": "x" * 65}, "longer than 64"),
     ({"campaign": "ok", "policy": "/no/such/policy.yaml"}, "/no/such/policy.yaml"),
     ({"campaign": "ok", "target_profile": "/no/such/profile.yaml"}, "/no/such/profile.yaml")],
)
def test_bad_launch_config_fails_with_the_problem_named_and_registers_nothing(tmp_path, config, named):
    defs = build_definitions(str(tmp_path))
    with dg.instance_for_test() as instance:
        result = launch(defs, instance, **config)
        assert not result.success
        assert named in failure_text(result)
        assert instance.get_dynamic_partitions(campaign_partitions.name) == []
    assert not (tmp_path / "campaigns").exists() or not any((tmp_path / "campaigns").glob("*/campaign.json"))


def test_launch_config_never_holds_a_secret():
    fields = CampaignLaunchConfig.model_fields.keys() | NotificationConfig.model_fields.keys()
    assert not {name for name in fields if "password" in name and not name.endswith("_env")}
    assert not {name for name in fields if "token" in name}


def test_hourly_partitions_are_stored_as_parquet_per_campaign_hour_and_reject_traversal(tmp_path):
    from staging_validation.campaign.io_managers import CampaignParquetIOManager
    from upath import UPath

    manager = CampaignParquetIOManager(base_path=UPath(tmp_path))
    path = manager.get_path_for_partition(None, UPath(tmp_path) / "probe_records", "night-1/07")
    assert path == UPath(tmp_path) / "campaigns" / "night-1" / "hours" / "probe_records" / "07"
    with pytest.raises(ValueError, match="campaign id"):
        manager.get_path_for_partition(None, UPath(tmp_path) / "probe_records", "../../etc/07")
    table = pa.table({"x": [1, 2]})
    target = UPath(str(path) + ".parquet")
    manager.dump_to_path(None, table, target)
    assert manager.load_from_path(None, target).equals(table)
