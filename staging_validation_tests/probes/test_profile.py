"""Target profiles and the prompt set: shipped files load, and every mistake names its field."""

from __future__ import annotations

import pytest
import yaml

from staging_validation.config_files import ConfigError
from staging_validation.probes.prompt_set import DEFAULT_PROMPT_SET, load_prompt_set
from staging_validation.target.client import TargetClient
from staging_validation.target.profile import (
    ALTERNATE_PROFILE,
    DOCUMENTED_PROFILE,
    fill_template,
    json_path_get,
    load_target_profile,
)


def test_default_profile_is_the_documented_contract():
    profile = load_target_profile()
    assert profile.requests.chat.route == "/v1/chat"
    assert profile.user.location == "body" and profile.user.name == "userId"
    assert profile.extract.ambiguity.field == "ambiguity_detected" and profile.extract.ambiguity.equals is None
    assert profile.telemetry.request_id_header == "x-request-id"


def test_alternate_profile_differs_only_in_configuration():
    profile = load_target_profile(ALTERNATE_PROFILE)
    assert profile.user.location == "header" and profile.user.name == "X-Vi-User"
    assert profile.extract.ambiguity.equals == "clarification"
    assert profile.requests.identity_link.route == "/api/v2/accounts/{vi_user_id}/links"


def _write_edited(tmp_path, edit) -> str:
    data = yaml.safe_load(DOCUMENTED_PROFILE.read_text())
    edit(data)
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda d: d["requests"].pop("chat"), "requests.chat"),
        (lambda d: d["requests"]["chat"]["body"].update(message="{mesage}"), "requests.chat.body"),
        (lambda d: d["requests"]["health"].update(route="health"), "requests.health.route"),
        (lambda d: d["extract"].update(ambigity={"field": "x"}), "extract.ambigity"),
        (lambda d: d["extract"].update(identity_id="account..id"), "extract.identity_id"),
        (lambda d: d.update(base_url="localhost:8765"), "base_url"),
        (lambda d: d["http"].update(request_timeout_s=0), "http.request_timeout_s"),
        (lambda d: d["user"].update(location="cookie"), "user.location"),
        (lambda d: d.update(telemetry={"request_id_header": ""}), "telemetry.request_id_header"),
        (lambda d: d.update(token_env=None, token_required=True), "token_required"),
    ],
)
def test_profile_errors_name_the_field(tmp_path, edit, field):
    path = _write_edited(tmp_path, edit)
    with pytest.raises(ConfigError) as error:
        load_target_profile(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(path) and f"{field}:" in message


def test_unreadable_profile_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_target_profile(tmp_path / "absent.yaml")


def test_required_token_missing_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("SV_TEST_TOKEN", raising=False)
    profile = load_target_profile(
        _write_edited(tmp_path, lambda d: d.update(token_env="SV_TEST_TOKEN", token_required=True))
    )
    with pytest.raises(ConfigError, match=r"token_env: .*\$SV_TEST_TOKEN"):
        TargetClient(profile)


def test_templates_keep_types_of_whole_placeholders_and_format_the_rest():
    template = {"ts": "{timestamp}", "text": "hi {user}", "nested": [{"id": "{vi_user_id}"}], "create": True}
    filled = fill_template(template, {"timestamp": 1700, "user": "u1", "vi_user_id": "v-9"})
    assert filled == {"ts": 1700, "text": "hi u1", "nested": [{"id": "v-9"}], "create": True}


def test_json_paths_walk_objects_and_lists_and_miss_quietly():
    document = {"data": {"links": [{"source": "discord"}, {"source": "astralis"}]}}
    assert json_path_get(document, "data.links.1.source") == "astralis"
    assert json_path_get(document, "data.links.5.source") is None
    assert json_path_get(document, "data.nothing.here") is None
    assert json_path_get([1, 2], "") == [1, 2]


def test_shipped_prompt_set_covers_every_class_with_labels():
    prompts = load_prompt_set().prompts
    classes = {p.prompt_class for p in prompts}
    assert classes == {"normal", "ambiguous", "relationship", "stream", "tool"}
    assert any(p.expected_ambiguous for p in prompts) and any(not p.expected_ambiguous for p in prompts)


def test_prompt_set_errors_name_the_field(tmp_path):
    data = yaml.safe_load(DEFAULT_PROMPT_SET.read_text())
    data["prompts"].append(dict(data["prompts"][0]))
    data["prompts"][1]["class"] = "smalltalk"
    path = tmp_path / "prompts.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as error:
        load_prompt_set(path)
    assert "prompts.1.class:" in str(error.value)
    data["prompts"][1]["class"] = "normal"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="prompts: .*duplicate prompt id 'normal-capital'"):
        load_prompt_set(path)
