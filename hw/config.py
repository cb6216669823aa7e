"""The accelerator described in YAML, validated with pydantic (extra keys are errors, reported with
their key path, all at once). Presets ship as package data in ``hw/configs/<name>.yaml``.

Schema (every section but ``energy.preset`` has defaults from SATA, docs/hw.md)::

    name: sata                      # free text
    description: ...
    array: {rows: 16, cols: 8, split: rows}   # split: how PTT's two middle cores share the array
    clock_hz: 400000000
    dataflow: os                    # os | ws | is
    scalesim_version: 2             # 2 (OS only) | 3
    forward_bits: 2                 # b: spikes packed b per word; FP ops scaled by b/16 if enabled
    buffers: {glb_kib: 128, spad_bytes_per_pe: 256}   # informational (no capacity model)
    sparsity: {sp_s: 0.9, sp_du: 0.7}                  # defaults when none are measured
    energy:
      preset: sata                  # sata | horowitz45; any key below overrides the preset
      joules_per_unit: 1.0e-12
      fp_bit_scaling: true
      static_power_w: 0.0
      ops: {ac: ..., mac: ..., lif: ..., pgu: ...}
      access: {dram: ..., sram: ..., spad: ...}
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hw.energy import ENERGY_PRESETS, EnergyModel, energy_preset, with_overrides
from hw.yamlload import load_yaml


class AcceleratorConfigError(ValueError):
    """A bad accelerator file or preset name; the message is one line (the CLI exits with 3)."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class _Strict(BaseModel):
    # strict: `true` is not a row count; finite: `.inf` is not a clock (it would print Infinity in JSON)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ArrayConfig(_Strict):
    rows: int = Field(16, ge=1)
    cols: int = Field(8, ge=1)
    #: how PTT's concurrent middle cores split the array: two halves of the rows, or of the columns
    split: Literal["rows", "cols"] = "rows"

    @model_validator(mode="after")
    def _splittable(self) -> "ArrayConfig":
        if (self.rows if self.split == "rows" else self.cols) < 2:
            raise ValueError(f"cannot split {self.rows}x{self.cols} array by {self.split}: need at least 2")
        return self


class BufferConfig(_Strict):
    glb_kib: float = Field(128.0, gt=0)
    spad_bytes_per_pe: int = Field(256, ge=1)


class SparsityConfig(_Strict):
    sp_s: float = Field(0.9, ge=0.0, le=1.0)
    sp_du: float = Field(0.7, ge=0.0, le=1.0)


class OpEnergyOverrides(_Strict):
    ac: Optional[float] = Field(None, ge=0)
    mac: Optional[float] = Field(None, ge=0)
    lif: Optional[float] = Field(None, ge=0)
    pgu: Optional[float] = Field(None, ge=0)


class AccessEnergyOverrides(_Strict):
    dram: Optional[float] = Field(None, ge=0)
    sram: Optional[float] = Field(None, ge=0)
    spad: Optional[float] = Field(None, ge=0)


class EnergyConfig(_Strict):
    preset: Literal[tuple(ENERGY_PRESETS)]  # type: ignore[valid-type]
    joules_per_unit: Optional[float] = Field(None, gt=0)
    fp_bit_scaling: Optional[bool] = None
    static_power_w: float = Field(0.0, ge=0)
    ops: OpEnergyOverrides = OpEnergyOverrides()
    access: AccessEnergyOverrides = AccessEnergyOverrides()


class AcceleratorConfig(_Strict):
    """A validated accelerator description (see the module docstring for the YAML schema)."""

    name: str
    description: str = ""
    array: ArrayConfig = ArrayConfig()
    clock_hz: float = Field(400e6, gt=0)
    dataflow: Literal["os", "ws", "is"] = "os"
    scalesim_version: Literal[2, 3] = 3
    forward_bits: int = Field(2, ge=1, le=16)
    buffers: BufferConfig = BufferConfig()
    sparsity: SparsityConfig = SparsityConfig()
    energy: EnergyConfig

    @model_validator(mode="after")
    def _v2_is_os_only(self) -> "AcceleratorConfig":
        if self.scalesim_version == 2 and self.dataflow != "os":
            raise ValueError("scalesim_version 2 closed form exists for dataflow 'os' only")
        return self

    def energy_model(self) -> EnergyModel:
        """The energy table: the preset with this file's overrides applied."""
        e = self.energy
        changes: dict[str, object] = {"forward_bits": self.forward_bits, "static_power_w": e.static_power_w,
                                      "ops": e.ops.model_dump(exclude_none=True),
                                      "access": e.access.model_dump(exclude_none=True)}
        if e.joules_per_unit is not None:
            changes["joules_per_unit"] = e.joules_per_unit
        if e.fp_bit_scaling is not None:
            changes["fp_bit_scaling"] = e.fp_bit_scaling
        return with_overrides(energy_preset(e.preset), **changes)

    def summary(self) -> dict[str, object]:
        """JSON-ready description (for reports)."""
        return self.model_dump()


def preset_names() -> list[str]:
    """Names of the shipped accelerator presets (``hw/configs/*.yaml``)."""
    root = resources.files("hw") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] not in ("missing", "extra_forbidden") and "input" in err:
            got = repr(err["input"])
            msg += f" (got {got if len(got) <= 80 else got[:38] + ' ... ' + got[-37:]})"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def parse_accelerator(data: object, source: str = "<data>") -> AcceleratorConfig:
    """Validate already-parsed YAML data; errors become one-line :class:`AcceleratorConfigError`."""
    if not isinstance(data, dict):
        raise AcceleratorConfigError(f"accelerator config {source}: expected a mapping at the top level, "
                                     f"got {type(data).__name__}")
    try:
        return AcceleratorConfig.model_validate(data)
    except RecursionError:
        raise AcceleratorConfigError(f"accelerator config {source}: nested too deeply") from None
    except ValidationError as exc:
        raise AcceleratorConfigError(f"accelerator config {source}: {_format_errors(exc)}") from None


def load_accelerator(spec: str | Path = "sata") -> AcceleratorConfig:
    """Load an accelerator by preset name (``sata``, ``tt-accel``) or YAML file path.

    Raises :class:`AcceleratorConfigError` (one line) for an unknown name, a missing or unreadable
    file, bad YAML, or values that fail validation.
    """
    text: str
    name = str(spec)
    if isinstance(spec, str) and name in preset_names():
        source = f"preset {name!r}"
        text = (resources.files("hw") / "configs" / f"{name}.yaml").read_text(encoding="utf-8")
    else:
        path = Path(spec)
        source = f"'{path}'"
        if not path.exists():
            raise AcceleratorConfigError(f"accelerator {name!r} is neither a preset "
                                         f"({', '.join(preset_names())}) nor an existing file")
        if not path.is_file():
            raise AcceleratorConfigError(f"accelerator config {source} is not a regular file (a folder, device or FIFO)")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise AcceleratorConfigError(f"accelerator config {source}: cannot read: {reason}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise AcceleratorConfigError(f"accelerator config {source}: invalid YAML{at}: "
                                     f"{getattr(exc, 'problem', None) or exc}") from None
    return parse_accelerator(data, source)


def accelerator_json_schema() -> dict[str, object]:
    """The JSON Schema of the YAML file, generated from the pydantic model."""
    return AcceleratorConfig.model_json_schema()
