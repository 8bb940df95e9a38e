"""Target profiles: everything a probe needs to know about one deployment's HTTP surface, as a YAML file.

A profile names the base URL, where the bearer token comes from (an environment variable, never the
file), timeouts and the response-body cap, how a user's identity travels (a body field, a header or a
query parameter), the route, method, query, headers and body template of every operation the probes use,
the extraction rule of every response value they read, and the prompts the probes send.
`documented.yaml` is the documented contract and the default; `alternate.yaml` drives the simulator's
`alternate` dialect. Switching dialects is switching files: no probe code knows a route or a field name.

Templates are JSON values whose strings may hold placeholders such as `{message}`; a string that is
exactly one placeholder takes the value with its type (so `"{timestamp}"` sends a number). Generated
values: `{user_uuid}` is a UUID derived from the probe user (the same user always gets the same UUID, in
every run), `{request_uuid}` a fresh UUID per request.

Not exposed: any operation under `requests`, any value under `extract` (a whole group such as
`health_features` or `relationship`, or one path inside it) may be written `{not_exposed: "<reason>"}`
instead. The probes then send nothing for that operation / read nothing for that value and record
"not exposed" (`ProbeRecord.not_exposed` = `"<profile path>: <reason>"`, outcome `not_exposed` for an
operation never sent); a check that needs it is "cannot verify" (passed unset), never a failure; the gates
that need it are NO_DATA naming it.

Prompts: `prompts` (inline) or `prompts_file` (a YAML file with the same keys, relative to the profile)
set the smoke, determinism and stress prompts and the labelled prompt set file (`prompts.prompt_set`,
relative to the file that names it); every key defaults to the runbook's prompts.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic_core import core_schema

from staging_validation.config_files import StrictModel, load_yaml_model
from staging_validation.schemas.telemetry_mapping import TelemetryMapping

SHIPPED_PROFILES_DIR = Path(__file__).resolve().parent
DOCUMENTED_PROFILE = SHIPPED_PROFILES_DIR / "documented.yaml"
ALTERNATE_PROFILE = SHIPPED_PROFILES_DIR / "alternate.yaml"
SPARSE_PROFILE = SHIPPED_PROFILES_DIR / "sparse.yaml"

GENERATED_PLACEHOLDERS = frozenset({"user_uuid", "request_uuid"})
PLACEHOLDERS = frozenset(
    {"message", "user", "timestamp", "provider", "provider_user_id", "vi_user_id", *GENERATED_PLACEHOLDERS}
)
PLACEHOLDER_PATTERN = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# Fixed, so that `{user_uuid}` of a probe user is the same in every run and on every machine.
USER_UUID_NAMESPACE = uuid.UUID("5a1d2c4e-8f0b-4c3a-9e61-7b2f0d9c6a11")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024

# A dotted path into a JSON document ("data.reply.text", "links.0.source"); "" is the document itself.
JsonPath = Annotated[str, pydantic.StringConstraints(pattern=r"^$|^[^.\s]+(\.[^.\s]+)*$")]


def user_uuid(user: str) -> str:
    """The generated `{user_uuid}` of a probe user: stable per user, distinct between users."""
    return str(uuid.uuid5(USER_UUID_NAMESPACE, user))


class NotExposed(StrictModel):
    """`{not_exposed: reason}`: the deployment does not offer this operation or value at all."""

    not_exposed: str = pydantic.Field(min_length=1)


def _exposed_or_not(value: Any, validate_exposed: core_schema.ValidatorFunctionWrapHandler) -> Any:
    if isinstance(value, NotExposed):
        return value
    if isinstance(value, dict) and "not_exposed" in value:
        return NotExposed.model_validate(value)
    return validate_exposed(value)


def _dump(value: Any) -> Any:
    return value.model_dump() if isinstance(value, pydantic.BaseModel) else value


class Exposable:
    """Annotation marker: `Annotated[X | NotExposed, Exposable(X)]` accepts X or `{not_exposed: reason}`.

    Validating the branch chosen by the `not_exposed` key (not a union) keeps each error at the field's
    own path, e.g. `requests.chat.route: Field required`, without union branch names.
    """

    def __init__(self, exposed: Any):
        self.exposed = exposed

    def __get_pydantic_core_schema__(self, source: Any, handler: pydantic.GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_wrap_validator_function(
            _exposed_or_not,
            handler.generate_schema(self.exposed),
            serialization=core_schema.plain_serializer_function_ser_schema(_dump),
        )


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
    """One operation: method, route, query parameters, headers and JSON body, each may hold placeholders.

    An identity API whose "create" is a GET that creates on first resolve is `method: GET` with `query`
    (and `headers`), for `identity_create` and `identity_resolve` alike.
    """

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    route: str = pydantic.Field(pattern=r"^/")
    query: dict[str, str] = pydantic.Field(default_factory=dict)
    body: dict[str, Any] | None = None
    headers: dict[str, str] = pydantic.Field(default_factory=dict)

    @pydantic.field_validator("route", "query", "body", "headers")
    @classmethod
    def _known_placeholders(cls, value: Any) -> Any:
        return _check_placeholders(value)


Operation = Annotated[RequestSpec | NotExposed, Exposable(RequestSpec)]
Path_ = Annotated[JsonPath | NotExposed, Exposable(JsonPath)]


class Requests(StrictModel):
    health: Operation
    chat: Operation
    stream: Operation
    identity_create: Operation
    identity_resolve: Operation
    identity_link: Operation
    identity_lookup: Operation


class UserConveyance(StrictModel):
    """Where a chat request carries the user id: a top-level body field, a header or a query parameter."""

    location: Literal["body", "header", "query"] = "body"
    name: str = pydantic.Field(default="userId", min_length=1)


class HttpSettings(StrictModel):
    connect_timeout_s: float = pydantic.Field(default=5.0, gt=0)
    request_timeout_s: float = pydantic.Field(default=30.0, gt=0)  # whole exchange, streams included
    max_connections: int = pydantic.Field(default=100, ge=1)  # also the stress probe's in-flight cap
    # Bytes of one response body a probe reads (streams included); past it the body is cut off and the
    # record says so (`body_truncated`), so a huge or endless body cannot exhaust the validator's memory.
    max_body_bytes: int = pydantic.Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024)


class AmbiguityRule(StrictModel):
    """The target's ambiguity verdict: a boolean field, or `field equals value` when `equals` is set."""

    field: JsonPath
    equals: str | int | float | bool | None = None


class RelationshipPaths(StrictModel):
    relationship_type: Path_
    voice_profile: Path_
    trust_level: Path_


class HealthFeaturePaths(StrictModel):
    """The four features deploy verification requires enabled, each a boolean in the health response."""

    ambiguity_gate: Path_
    relationship_model: Path_
    identity_spine: Path_
    continuity_required: Path_


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


Alternatives = Annotated[list[JsonPath], pydantic.BeforeValidator(_alternatives)]


class Extraction(StrictModel):
    """Where each value a probe reads sits in the responses. Lists are alternatives, first present wins."""

    record_id: Annotated[Alternatives | NotExposed, Exposable(Alternatives)]
    answer: Annotated[Alternatives | NotExposed, Exposable(Alternatives)]
    ambiguity: Annotated[AmbiguityRule | NotExposed, Exposable(AmbiguityRule)]
    relationship: Annotated[RelationshipPaths | NotExposed, Exposable(RelationshipPaths)]
    identity_id: Path_
    links: Annotated[LinkListPaths | NotExposed, Exposable(LinkListPaths)] = LinkListPaths()
    health_features: Annotated[HealthFeaturePaths | NotExposed, Exposable(HealthFeaturePaths)]
    sse: SseRule = SseRule()


class SmokePrompts(StrictModel):
    """The four documented smoke tests' messages."""

    normal: str = pydantic.Field(default="What is the capital of France?", min_length=1)
    ambiguous: str = pydantic.Field(default="so what not", min_length=1)
    relationship: str = pydantic.Field(default="Can you remind me what we talked about last time?", min_length=1)
    stream: str = pydantic.Field(default="Tell me a short story about a lighthouse keeper.", min_length=1)


DEFAULT_STRESS_PROMPTS = (
    "What is the capital of Australia?",
    "Give me a simple recipe for tomato soup.",
    "Summarize the plot of Romeo and Juliet.",
    "How do I keep basil plants healthy indoors?",
)


class ProbePrompts(StrictModel):
    smoke: SmokePrompts = SmokePrompts()
    # Sent five times by each determinism user. Choose one the service answers through relationship
    # resolution (a service may answer date questions by a fast path that skips it).
    determinism: str = pydantic.Field(default="Good morning! What should I focus on today?", min_length=1)
    stress: list[Annotated[str, pydantic.StringConstraints(min_length=1)]] = pydantic.Field(
        default=list(DEFAULT_STRESS_PROMPTS), min_length=1)
    # A labelled prompt-set YAML (the format of probes/prompt_set.yaml); None: the shipped set.
    prompt_set: str | None = None


@dataclasses.dataclass(frozen=True)
class ProbedRoute:
    route: str  # the template, e.g. "/v1/identity/providers/{vi_user_id}"
    operations: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.route} ({', '.join(self.operations)})"

    def matches(self, path: str) -> bool:
        """Whether a request path (query string allowed) is this route; a placeholder is one path segment."""
        pattern = "".join("[^/?]+" if index % 2 else re.escape(part)
                          for index, part in enumerate(PLACEHOLDER_PATTERN.split(self.route)))
        return re.fullmatch(pattern + r"(\?.*)?", path) is not None


class TargetProfile(StrictModel):
    name: str = "unnamed"
    base_url: str = pydantic.Field(pattern=r"^https?://[^\s/]+")
    token_env: str | None = None  # name of the environment variable holding the bearer token
    token_required: bool = False
    http: HttpSettings = HttpSettings()
    user: UserConveyance = UserConveyance()
    requests: Requests
    extract: Extraction
    prompts: ProbePrompts = ProbePrompts()
    prompts_file: str | None = None  # a YAML file with the keys of `prompts`, relative to the profile
    telemetry: TelemetryMapping = TelemetryMapping()

    @pydantic.field_validator("token_required")
    @classmethod
    def _required_token_has_a_source(cls, required: bool, info: pydantic.ValidationInfo) -> bool:
        if required and not info.data.get("token_env"):
            raise ValueError("a required token needs token_env, the environment variable that holds it")
        return required

    @pydantic.model_validator(mode="after")
    def _prompts_in_one_place(self) -> TargetProfile:
        if self.prompts_file is not None and "prompts" in self.model_fields_set:
            raise ValueError("prompts_file: give the prompts inline (prompts) or in prompts_file, not both")
        return self

    def not_exposed(self, path: str) -> str | None:
        """`"<path>: <reason>"` when the value or operation at the dotted profile path (e.g.
        `extract.relationship`, `requests.identity_link`), or a group containing it, is not exposed."""
        value: Any = self
        walked: list[str] = []
        for segment in path.split("."):
            value = getattr(value, segment)
            walked.append(segment)
            if isinstance(value, NotExposed):
                return f"{'.'.join(walked)}: {value.not_exposed}"
        return None

    def probed_routes(self) -> list[ProbedRoute]:
        """Each exposed route template with the operations using it (several may share one route)."""
        routes: dict[str, list[str]] = {}
        for operation in type(self.requests).model_fields:
            spec = getattr(self.requests, operation)
            if isinstance(spec, RequestSpec):
                routes.setdefault(spec.route, []).append(operation)
        return [ProbedRoute(route, tuple(operations)) for route, operations in routes.items()]

    def not_exposed_anywhere(self, path: str) -> list[str]:
        """Every not-exposed declaration at or below the dotted profile path."""
        found = self.not_exposed(path)
        if found:
            return [found]
        value: Any = self
        for segment in path.split("."):
            value = getattr(value, segment)
        if not isinstance(value, StrictModel):
            return []
        return [item for name in type(value).model_fields
                for item in self.not_exposed_anywhere(f"{path}.{name}")]


def _relative_to(base_dir: Path, path: str) -> str:
    return str(Path(path) if Path(path).is_absolute() else (base_dir / path).resolve())


def load_target_profile(path: str | Path | None = None) -> TargetProfile:
    """The profile at `path`, or the documented contract, with its prompt files read (relative paths
    are relative to the file naming them); raises ConfigError naming the file and the field."""
    path = Path(DOCUMENTED_PROFILE if path is None else path)
    profile = load_yaml_model(path, TargetProfile)
    prompts, prompts_dir = profile.prompts, path.parent
    if profile.prompts_file is not None:
        prompts_path = Path(_relative_to(path.parent, profile.prompts_file))
        prompts, prompts_dir = load_yaml_model(prompts_path, ProbePrompts), prompts_path.parent
    if prompts.prompt_set is not None:
        prompts = prompts.model_copy(update={"prompt_set": _relative_to(prompts_dir, prompts.prompt_set)})
    return profile.model_copy(update={"prompts": prompts})


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
