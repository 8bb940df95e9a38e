"""Target profiles: everything a probe needs to know about one deployment's HTTP surface, as a YAML file.

A profile names the base URL, where the bearer token comes from (an environment variable, never the
file), timeouts, how a user's identity travels (a body field or a header), the route, method and request
template of every operation the probes use, and the extraction rule of every response value they read.
`documented.yaml` is the documented contract and the default; `alternate.yaml` drives the simulator's
`alternate` dialect. Switching dialects is switching files: no probe code knows a route or a field name.

Templates are JSON values whose strings may hold placeholders such as `{message}`; a string that is
exactly one placeholder takes the value with its type (so `"{timestamp}"` sends a number).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic

from staging_validation.config_files import StrictModel, load_yaml_model
from staging_validation.schemas.telemetry_mapping import TelemetryMapping

SHIPPED_PROFILES_DIR = Path(__file__).resolve().parent
DOCUMENTED_PROFILE = SHIPPED_PROFILES_DIR / "documented.yaml"
ALTERNATE_PROFILE = SHIPPED_PROFILES_DIR / "alternate.yaml"

PLACEHOLDERS = frozenset(
    {"message", "user", "timestamp", "provider", "provider_user_id", "vi_user_id"}
)
PLACEHOLDER_PATTERN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

# A dotted path into a JSON document ("data.reply.text", "links.0.source"); "" is the document itself.
JsonPath = Annotated[str, pydantic.StringConstraints(pattern=r"^$|^[^.\s]+(\.[^.\s]+)*$")]


def _placeholders_in(value: Any) -> set[str]:
    if isinstance(value, str):
        return set(PLACEHOLDER_PATTERN.findall(value))
    if isinstance(value, dict):
        return set().union(*(_placeholders_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_placeholders_in(v) for v in value))
    return set()


def _check_placeholders(value: Any) -> Any:
    unknown = sorted(_placeholders_in(value) - PLACEHOLDERS)
    if unknown:
        known = ", ".join("{" + name + "}" for name in sorted(PLACEHOLDERS))
        raise ValueError(f"unknown placeholder(s) {', '.join(unknown)} (known: {known})")
    return value


class RequestSpec(StrictModel):
    """One operation: method, route (may hold placeholders), optional JSON body and headers templates."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    route: str = pydantic.Field(pattern=r"^/")
    body: dict[str, Any] | None = None
    headers: dict[str, str] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("route", "body", "headers")
    @classmethod
    def _known_placeholders(cls, value: Any) -> Any:
        return _check_placeholders(value)


class Requests(StrictModel):
    health: RequestSpec
    chat: RequestSpec
    stream: RequestSpec
    identity_create: RequestSpec
    identity_resolve: RequestSpec
    identity_link: RequestSpec
    identity_lookup: RequestSpec


class UserConveyance(StrictModel):
    """Where a chat request carries the user id: a top-level body field or a header."""

    location: Literal["body", "header"] = "body"
    name: str = pydantic.Field(default="userId", min_length=1)


class HttpSettings(StrictModel):
    connect_timeout_s: float = pydantic.Field(default=5.0, gt=0)
    request_timeout_s: float = pydantic.Field(default=30.0, gt=0)  # whole exchange, streams included
    max_connections: int = pydantic.Field(default=100, ge=1)  # also the stress probe's in-flight cap


class AmbiguityRule(StrictModel):
    """The target's ambiguity verdict: a boolean field, or `field equals value` when `equals` is set."""

    field: JsonPath
    equals: str | int | float | bool | None = None


class RelationshipPaths(StrictModel):
    relationship_type: JsonPath
    voice_profile: JsonPath
    trust_level: JsonPath


class HealthFeaturePaths(StrictModel):
    """The four features deploy verification requires enabled, each a boolean in the health response."""

    ambiguity_gate: JsonPath
    relationship_model: JsonPath
    identity_spine: JsonPath
    continuity_required: JsonPath


class LinkListPaths(StrictModel):
    """The reverse lookup's list of (provider, provider user id) pairs."""

    items: JsonPath = ""  # where the list is; "" when the response is the list itself
    provider: JsonPath = "provider"
    provider_user_id: JsonPath = "provider_user_id"


class SseRule(StrictModel):
    event_prefix: str = pydantic.Field(default="data:", min_length=1)
    min_events: int = pydantic.Field(default=2, ge=1)  # "a usable stream has several"


def _alternatives(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Extraction(StrictModel):
    """Where each value a probe reads sits in the responses. Lists are alternatives, first present wins."""

    record_id: Annotated[list[JsonPath], pydantic.BeforeValidator(_alternatives)]
    answer: Annotated[list[JsonPath], pydantic.BeforeValidator(_alternatives)]
    ambiguity: AmbiguityRule
    relationship: RelationshipPaths
    identity_id: JsonPath
    links: LinkListPaths = LinkListPaths()
    health_features: HealthFeaturePaths
    sse: SseRule = SseRule()


class TargetProfile(StrictModel):
    name: str = "unnamed"
    base_url: str = pydantic.Field(pattern=r"^https?://[^\s/]+")
    token_env: str | None = None  # name of the environment variable holding the bearer token
    token_required: bool = False
    http: HttpSettings = HttpSettings()
    user: UserConveyance = UserConveyance()
    requests: Requests
    extract: Extraction
    telemetry: TelemetryMapping = TelemetryMapping()

    @pydantic.field_validator("token_required")
    @classmethod
    def _required_token_has_a_source(cls, required: bool, info: pydantic.ValidationInfo) -> bool:
        if required and not info.data.get("token_env"):
            raise ValueError("a required token needs token_env, the environment variable that holds it")
        return required


def load_target_profile(path: str | Path | None = None) -> TargetProfile:
    """The profile at `path`, or the documented contract; raises ConfigError naming the field."""
    return load_yaml_model(DOCUMENTED_PROFILE if path is None else path, TargetProfile)


_MISSING = object()


def json_path_get(document: Any, path: str) -> Any:
    """The value at a dotted path (numeric segments index lists), or None when any step is absent."""
    value = document
    for segment in path.split(".") if path else ():
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.lstrip("-").isdigit():
            index = int(segment)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


def first_present(document: Any, paths: list[str]) -> Any:
    for path in paths:
        value = json_path_get(document, path)
        if value is not None:
            return value
    return None


def fill_template(template: Any, values: dict[str, Any]) -> Any:
    """The template with placeholders replaced; a string that is one whole placeholder keeps the type."""
    if isinstance(template, str):
        whole = PLACEHOLDER_PATTERN.fullmatch(template)
        if whole:
            return values[whole.group(1)]
        return PLACEHOLDER_PATTERN.sub(lambda match: str(values[match.group(1)]), template)
    if isinstance(template, dict):
        return {key: fill_template(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill_template(value, values) for value in template]
    return template
