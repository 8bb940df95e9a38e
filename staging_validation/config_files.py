"""Loading of the user-editable YAML files (target profiles, simulator profiles, policy, prompt set).

Every file is validated by a pydantic model on load; a problem is reported as one line naming the
file and the dotted path of the offending field, which is what a user editing the file needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pydantic
import yaml

ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


class ConfigError(ValueError):
    """A user-supplied configuration file or value is invalid; the message names the field."""


def _field_path(location: tuple) -> str:
    return ".".join(str(part) for part in location) or "<top level>"


def validate_model(data: object, model: type[ModelT], source: str) -> ModelT:
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        # A validator's own message reads as it was written, without pydantic's "Value error, " prefix.
        problems = "; ".join(f"{_field_path(err['loc'])}: {err['msg'].removeprefix('Value error, ')}"
                             for err in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


def load_yaml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return validate_model(data if data is not None else {}, model, str(path))


class StrictModel(pydantic.BaseModel):
    """Base for configuration models: unknown keys are errors, so a typo never goes unnoticed."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
