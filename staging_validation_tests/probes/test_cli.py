"""`staging-validation probe …`: readable output or JSON, exit 0 pass / 1 fail / 2 bad input."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from staging_validation.cli import main
from staging_validation.target.profile import ALTERNATE_PROFILE
from staging_validation_tests.probes.conftest import closed_port


def invoke(*args: str):
    return CliRunner().invoke(main, ["probe", *args], catch_exceptions=False)


def test_smoke_passes_against_the_healthy_simulator_and_prints_a_table(target):
    simulator, _ = target
    result = invoke("smoke", "--base-url", simulator.base_url)
    assert result.exit_code == 0, result.output
    assert "probe smoke" in result.output and "PASS" in result.output
    for case in ("normal", "ambiguous", "relationship", "stream"):
        assert case in result.output


@pytest.mark.parametrize("target", ["alternate"], indirect=True)
def test_identity_json_against_the_alternate_dialect(target):
    simulator, _ = target
    result = invoke("identity", "--profile", str(ALTERNATE_PROFILE),
                    "--base-url", simulator.base_url, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["probe"] == "identity" and document["passed"] is True
    assert document["summary"]["ids_distinct"] is True
    assert {r["case"] for r in document["records"]} >= {"create_discord", "create_sovereign", "link_astralis"}


def test_stress_reports_its_figures_as_json(target):
    simulator, _ = target
    result = invoke("stress", "--base-url", simulator.base_url, "--rate", "20", "--duration", "0.5", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)["summary"]
    assert summary["planned"] == 10 and summary["dropped"] == 0 and summary["p99_ms"] is not None


def test_failing_probe_exits_1_with_the_reasons():
    result = invoke("deploy", "--base-url", f"http://127.0.0.1:{closed_port()}")
    assert result.exit_code == 1
    assert "FAIL" in result.output and "connection error" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["smoke", "--profile", "no-such-profile.yaml"], "cannot read"),
        (["smoke", "--base-url", "localhost:8765"], "must be an http:// or https:// URL with a host"),
        (["stress", "--rate", "-3"], "--rate"),
        (["prompt-set", "--prompts", "no-such-prompts.yaml"], "cannot read"),
        (["smoke", "--hour-seconds", "0"], "--hour-seconds"),
    ],
)
def test_bad_arguments_exit_2_with_a_one_line_error(args, message):
    result = invoke(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_invalid_profile_exits_2_naming_the_field(tmp_path):
    profile = tmp_path / "profile.yaml"
    profile.write_text("base_url: http://127.0.0.1:1\nrequests: {}\nextract: {}\n")
    result = invoke("smoke", "--profile", str(profile))
    assert result.exit_code == 2
    error_lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and "requests.health" in error_lines[0]
