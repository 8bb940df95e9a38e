"""campaign.json is a file a person may edit: what it names must stay inside its campaign's folder."""

from __future__ import annotations

import pytest

from staging_validation.layout import CampaignLayout
from staging_validation.lifecycle import CampaignState, load_campaign_state, register_campaign_state

from staging_validation.schemas.timing import CampaignTiming
from staging_validation.config_files import ConfigError
from staging_validation.hour_runner import telemetry_store

START_MS = 1_700_000_000_000


def registered(data_root, campaign: str = "night-1") -> CampaignState:
    state = CampaignState(campaign=campaign, created_at_ms=START_MS,
                          timing=CampaignTiming(start_ms=START_MS, hour_seconds=60))
    register_campaign_state(data_root, state)
    return state


@pytest.mark.parametrize(
    ("edited_id", "problem"),
    [("../escaped", "campaign id '../escaped': only letters, digits"), ("night-2", "names campaign 'night-2'")],
)
def test_an_edited_campaign_id_is_refused_on_load_naming_the_file(tmp_path, edited_id, problem):
    state = registered(tmp_path)
    path = CampaignLayout.of(tmp_path, "night-1").state_file
    path.write_text(state.model_copy(update={"campaign": edited_id}).model_dump_json())
    with pytest.raises(ConfigError, match=problem) as refused:
        load_campaign_state(tmp_path, "night-1")
    assert str(path) in str(refused.value)


def test_the_telemetry_store_is_inside_the_campaign_folder_and_refuses_an_id_that_is_not(tmp_path):
    state = registered(tmp_path)
    assert telemetry_store(tmp_path, state) == tmp_path / "campaigns" / "night-1" / "telemetry"
    with pytest.raises(ConfigError, match="campaign id '../escaped'"):
        telemetry_store(tmp_path, state.model_copy(update={"campaign": "../escaped"}))
