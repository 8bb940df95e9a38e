from pathlib import Path

import pytest
import yaml

from staging_validation.acceptance.policy import DEFAULT_POLICY_PATH, Policy, load_policy
from staging_validation.config_files import ConfigError


def test_shipped_policy_states_the_defaults_of_the_policy_spec():
    policy = load_policy()
    assert policy == Policy()
    assert policy.min_samples == 50 and policy.coverage_minimum == 0.9 and policy.extension_hours == 48
    assert [policy.gate(n).critical for n in range(1, 6)] == [True, True, True, False, True]
    assert (policy.monitor.errors_warning_above, policy.monitor.slow_request_ms,
            policy.monitor.slow_requests_warning_above) == (10, 2000, 5)
    assert policy.release_date is None and policy.redeploy_date is None


def test_every_value_of_the_shipped_policy_is_commented():
    lines = DEFAULT_POLICY_PATH.read_text(encoding="utf-8").splitlines()
    uncommented = [line for number, line in enumerate(lines)
                   if line.strip() and not line.strip().startswith("#") and not line.rstrip().endswith(":")
                   and not lines[number - 1].strip().startswith("#")]
    assert uncommented == []


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"gates": {"ambiguity": {"rate_review": 0.10, "rate_extend": 0.05}}}, "rate_review"),
        ({"gates": {"ambiguity": {"rate_review": 0.10, "rate_extend": 0.10}}}, "rate_review"),
        ({"gates": {"governor": {"zero_regen_fail_below": 0.9, "zero_regen_pass_above": 0.85}}},
         "zero_regen_fail_below"),
        ({"gates": {"governance": {"critical": True}}}, "gates.governance"),
        ({"extension_hours": 47}, "extension_hours"),
        ({"extension_hours": 73}, "extension_hours"),
        ({"coverage_minimum": 1.5}, "coverage_minimum"),
        ({"monitor": {"errors_warning_abov": 3}}, "monitor.errors_warning_abov"),
        ({"release_date": "next tuesday"}, "release_date"),
    ],
)
def test_invalid_policy_is_a_config_error_naming_the_field(tmp_path, data, field):
    with pytest.raises(ConfigError) as error:
        load_policy(_write(tmp_path, data))
    assert field in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("hours", [48, 60, 72])
def test_extension_within_48_to_72_hours_is_accepted(tmp_path, hours):
    assert load_policy(_write(tmp_path, {"extension_hours": hours})).extension_hours == hours


def test_edited_policy_overrides_only_what_it_names(tmp_path):
    policy = load_policy(_write(tmp_path, {"gates": {"governor": {"critical": True}}, "release_date": "2026-12-01"}))
    assert policy.gates.governor.critical is True
    assert policy.gates.governor.zero_regen_pass_above == 0.85
    assert str(policy.release_date) == "2026-12-01"


def test_missing_policy_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
