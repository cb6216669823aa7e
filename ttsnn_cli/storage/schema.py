"""The bundle as data: every field validated (pydantic, strict types) before anything uses it.

A bundle is whatever dict a file holds, so nothing in it is trusted: a wrong field is one
BadInputError naming the field's path (`bundle x.tt: io.input_shape.0: ...`). Strict types: `true`
is not a timestep, `"1"` is not a format version. Sections may carry keys a later ttsnn adds
(ignored, so an older reader still reads what it knows); a newer format version is refused.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from ttsnn_cli.errors import BadInputError, describe_validation
from ttsnn_cli.storage.bundle import FORMAT, FORMAT_VERSION, ModelIO
from ttsnn_cli.storage.trust import ArchSpec, JsonKwargs, check_plain_json

PositiveInt = Annotated[StrictInt, Field(ge=1)]

ModelT = TypeVar("ModelT", bound=BaseModel)


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", arbitrary_types_allowed=True, frozen=True)


class ArchRecord(_Record):
    spec: ArchSpec
    kwargs: JsonKwargs = Field(default_factory=dict)


class IORecord(_Record):
    input_shape: Annotated[list[PositiveInt], Field(min_length=1, max_length=4)] | None = None
    timesteps: PositiveInt | None = None
    data: StrictStr | None = None
    style: Literal["auto", "multistep", "sequential", "stepped", "own_loop"] | None = None  # --style (runner.STYLES)
    readout: Annotated[StrictStr, Field(pattern=r"^(spikes|membrane|[0-9]{1,2})$")] | None = None  # --readout

    def model_io(self) -> ModelIO:
        return ModelIO(tuple(self.input_shape) if self.input_shape else None, self.timesteps, self.data, self.style,
                       self.readout)


class TTRecord(_Record):
    mode: StrictStr
    layers: dict[StrictStr, dict[StrictStr, Any]]

    @field_validator("layers")
    @classmethod
    def _layers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, config in value.items():
            try:
                check_plain_json(config, name)
            except BadInputError as error:
                raise ValueError(str(error)) from None
        return value


class SourceRecord(_Record):
    path: StrictStr | None = None
    sha256: StrictStr | None = None


class BundleRecord(_Record):
    """The fields of a ttsnn bundle (`storage.bundle` writes them; this reads them)."""

    format: StrictStr
    format_version: StrictInt = Field(ge=1)
    ttsnn_version: StrictStr | None = None
    arch: ArchRecord
    tt: TTRecord | None = None
    io: IORecord | None = None
    state_dict: dict[StrictStr, torch.Tensor]
    state_sha256: StrictStr
    source: SourceRecord | None = None
    history: list[dict[StrictStr, Any]] = Field(default_factory=list)

    @field_validator("format_version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value > FORMAT_VERSION:
            raise ValueError(f"bundle format {value} was written by a newer ttsnn (this one reads up to "
                             f"{FORMAT_VERSION}); upgrade ttsnn")
        return value

    @field_validator("history")
    @classmethod
    def _history(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            return check_plain_json(value, "history")
        except BadInputError as error:
            raise ValueError(str(error)) from None


def validated(schema: type[ModelT], obj: Any, what: str, first_only: bool = False) -> ModelT:
    """`obj` validated against `schema` (bundles here, recipes in `pipeline.recipe`); otherwise one
    BadInputError line, `what: field.path: message`, never pydantic's multi-line report."""
    try:
        return schema.model_validate(obj)
    except ValidationError as error:
        raise BadInputError(f"{what}: {describe_validation(error, first_only)}") from None
    except RecursionError:
        raise BadInputError(f"{what}: nested too deeply") from None


def validate_bundle(obj: Any, source: str) -> BundleRecord:
    """The validated bundle in `obj` (read from `source`); BadInputError naming the first bad field."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise BadInputError(f"{source} is not a ttsnn bundle")
    return validated(BundleRecord, obj, f"bundle {source} has a bad field", first_only=True)
