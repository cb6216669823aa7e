"""Recipes: YAML data validated at the edge with pydantic; the JSON Schema is generated from here.

A recipe names the model and data and the stages to run. Each stage owns one section; a section
that is absent is a stage that does not run. Unknown keys are errors, all reported at once with
their key paths. Components are named from closed choices (zoo names, modes, methods), so a YAML
file cannot make ttsnn import arbitrary code, except the model architecture, which the user names.
Relative paths resolve against the recipe's folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr

from hw.yamlload import load_yaml
from ttsnn_cli.data import SPEC_HELP, check_data_spec, is_user_spec
from ttsnn_cli.errors import BadInputError, abbreviate
from ttsnn_cli.kinds import DEFAULT_LAYER_TYPES, LAYER_TYPES
from ttsnn_cli.storage.read import read_bytes
from ttsnn_cli.storage.schema import validated
from ttsnn_cli.storage.trust import ArchSpec, JsonKwargs


def _data_spec(value: str) -> str:
    try:
        return check_data_spec(value, "data")
    except BadInputError as error:
        raise ValueError(str(error)) from None


#: a data SPEC, checked for form only (nothing read or imported when a recipe is validated)
DataSpec = Annotated[StrictStr, AfterValidator(_data_spec)]


class Section(BaseModel):
    # strict: `true` is not a rank nor `"3"` an epoch count; finite: `.inf` is not a learning rate
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class ModelSection(Section):
    """The dense model: architecture, weights (optional for zoo models: planning), and its inputs."""

    arch: ArchSpec = Field(description="zoo:NAME or MODULE:FACTORY")
    kwargs: JsonKwargs = Field(default_factory=dict, description="keyword arguments of the factory (plain JSON values)")
    checkpoint: str | None = Field(None, description="state_dict or bundle; relative to the recipe's folder")
    input_shape: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=1, max_length=4,
                                                                 description="per-step input shape C,H,W")
    timesteps: int | None = Field(None, ge=1, description="timesteps T")


class CompressSection(Section):
    """TT decomposition: ranks (or a method choosing them), mode, which layers, per-layer ranks."""

    ranks: int | str | list[int] | None = Field(None, description="r, 'r1,r2,r3' or [r1, r2, r3]")
    rank_method: str = Field("fixed", description="fixed, vbmf, energy:F, budget:X (global), uniform:X or sensitivity:X (needs data)")
    mode: Literal["stt", "ptt", "htt"] = "stt"
    include: list[str] = Field(default_factory=list, description="regexes over module names to decompose")
    exclude: list[str] = Field(default_factory=list, description="regexes over module names to keep dense")
    layers: dict[str, int | str | list[int]] = Field(
        default_factory=dict, description="per-layer ranks by module name (or a regex matching whole names)"
    )
    svd: Literal["qr_svd", "truncated_svd", "symeig_svd", "randomized_svd"] = "qr_svd"
    layer_types: list[Literal[LAYER_TYPES]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(DEFAULT_LAYER_TYPES), min_length=1,
        description="which dense layers become TT layers: " + ", ".join(LAYER_TYPES)
        + " (linear: a TT-matrix; conv2d_grouped: one TT chain per group)")
    linear_cores: int = Field(3, ge=1, le=8, description="cores d of a TT-matrix Linear (features split in d factors)")
    data: DataSpec | None = Field(None, description="sensitivity:X calibration data (default: the recipe's `data`)")
    calib_samples: int = Field(256, ge=1, description="training samples sensitivity:X measures the loss on")
    seed: int = Field(0, description="seed of the calibration subset (and of a fresh zoo model)")
    round_ranks: int = Field(1, ge=1, le=64, description="round every rank to a multiple of this (8 suits tensor cores)")
    budget_on: Literal["weights", "macs", "time"] = Field(
        "weights", description="what budget:X, uniform:X and sensitivity:X shrink X times: weights, MACs per "
        "timestep, or forward + backward time measured per layer")


class TrainSection(Section):
    """Training options of the `train` (dense) and `finetune` (TT) stages; the CLI's TRAINING OPTIONS."""

    data: DataSpec | None = Field(None, description="data spec for this stage (default: the recipe's `data`)")
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    timesteps: int | None = Field(None, ge=1, description="T (default: model.timesteps, the bundle's, or 4)")
    lr: float | None = Field(None, gt=0, description="default: 0.1 with sgd (finetune 0.01), 0.001 with adam")
    optimizer: Literal["sgd", "adam"] | None = Field(None, description="default: sgd for a zoo model and for "
                                                     "finetune, adam to train your own MODULE:FACTORY")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    schedule: Literal["cosine", "constant"] = "cosine"
    seed: int = Field(0, ge=0, le=2**63 - 1)
    device: str = Field("auto", description="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    train: Literal["all", "cores"] = Field("all", description="all parameters, or only the TT cores")
    loss: Literal["ce", "ce_rate", "ce_count", "mse_count"] = Field("ce", description="ce: on the time-averaged output")
    encoding: Literal["direct", "rate"] = "direct"
    recompute_tt: bool = Field(False, description="TT layers recompute their cores in backward: less memory, more time")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="autocast precision (weights stay fp32)")
    compile: bool = Field(False, description="run the training step through torch.compile (train.compiled)")
    data_on_device: Literal["auto", "off"] = Field(
        "auto", description="auto: a split that fits is kept on the device and batched there; off: a DataLoader")
    readout: Annotated[StrictStr, Field(pattern=r"^(spikes|membrane|[0-9]{1,2})$")] | None = Field(
        None, description="which record of a model returning several the loss and accuracy read: spikes (the first), "
        "membrane (the second, as snntorch's tutorials train) or an index (default: the model's, else spikes)")
    logs: bool = Field(False, description="write metrics.csv and a TensorBoard event file every epoch to "
                       "<run folder>/logs/<stage>/ (`tensorboard --logdir <run folder>/logs`)")


class FinetuneSection(TrainSection):
    """Fine-tuning after compress: same options, a smaller default learning rate, optional distillation."""

    teacher: str | None = Field(None, description="distil from: `source` (the compress stage's input, the dense "
                                "model) or a bundle path relative to the recipe's folder")
    distill_weight: float = Field(0.5, ge=0, le=1, description="a in (1 - a) * task + a * t^2 * KL")
    distill_temperature: float = Field(4.0, gt=0, description="t, the softmax temperature")
    tt_kernel: Literal["auto", "factored", "rebuilt"] = Field(
        "auto", description="how TT layers run: auto (timed per layer on CUDA, factored on CPU), factored, rebuilt")


class ReportGates(Section):
    """CI gates of the report stage (any failed gate fails the run with exit 4)."""

    min_param_reduction: float | None = Field(None, gt=0, description="dense/TT conv+linear weights at least this")
    min_mac_reduction: float | None = Field(None, gt=0, description="dense/TT MACs per timestep at least this")
    max_energy_ratio: float | None = Field(None, gt=0, description="hw training energy TT/dense at most this")
    max_acc_drop: float | None = Field(None, ge=0, description="dense minus TT test accuracy, points (needs data)")


class ReportSection(Section):
    """The report stage: costs of the model against its dense baseline, hw simulation, gates."""

    hw: bool = Field(False, description="run the accelerator model (hw/) on every schedule")
    accel: str = Field("sata", description="accelerator preset (sata, tt-accel) or YAML file")
    data: bool = Field(False, description="measure spike rates (and accuracy for max_acc_drop) on the recipe's data")
    baseline: str | None = Field(None, description="dense baseline checkpoint (default: the arch rebuilt dense)")
    plot: str | None = Field(None, description="PNG to write, relative to the run folder")
    gates: ReportGates = Field(default_factory=ReportGates)


class ExportSection(Section):
    """The export stage: ONNX (and NIR) of the pipeline's current model, written in the run folder."""

    onnx: str = Field("model.onnx", description="ONNX file name, relative to the run folder")
    mode: Literal["unrolled", "step"] = Field("unrolled", description="unrolled over T, or one step with membranes")
    verify: bool = Field(True, description="onnx.checker + onnxruntime against torch (the run fails with exit 5 if not)")
    nir: str | None = Field(None, description="NIR file name (relative to the run folder), or none")
    reconstruct_dense: bool = Field(False, description="fold every TT layer back into dense conv kernels")
    batch: int = Field(2, ge=1, description="batch size for tracing and verification (the graph's batch is dynamic)")


class SweepSection(Section):
    """The sweep stage: the accuracy-compression front of the dense model (the compress stage's input,
    or model.checkpoint): per method and target compress, fine-tune, evaluate, in `<out>/sweep/`."""

    data: DataSpec | None = Field(None, description="data spec (default: the recipe's `data`)")
    targets: list[float] = Field(default_factory=lambda: [4.0, 8.0, 16.0, 32.0], min_length=1,
                                 description="shrink factors X of the decomposed weights")
    methods: list[Literal["budget", "uniform", "sensitivity", "fisher", "recovery", "vbmf"]] = Field(
        default_factory=lambda: ["budget", "sensitivity", "vbmf"], min_length=1, description="rank methods to compare")
    mode: Literal["stt", "ptt", "htt"] = "stt"
    include: list[str] = Field(default_factory=list, description="regexes over module names to decompose")
    exclude: list[str] = Field(default_factory=list, description="regexes over module names to keep dense")
    calib_samples: int = Field(256, ge=1, description="training samples sensitivity measures the loss on")
    layer_types: list[Literal[LAYER_TYPES]] | None = Field(  # type: ignore[valid-type]
        None, min_length=1, description="which layers every point decomposes (default: conv2d, conv1d)")
    linear_cores: int = Field(3, ge=1, le=8, description="cores d of a TT-matrix Linear")
    budget_on: Literal["weights", "macs", "time"] = Field(
        "weights", description="what the targets of budget, uniform, sensitivity and fisher count")
    train_samples: int | None = Field(None, ge=1, description="fine-tune on this many training samples (default all)")
    finetune: FinetuneSection = Field(default_factory=lambda: FinetuneSection(epochs=1),
                                      description="the fine-tune every point gets (teacher: source distils the dense model)")
    max_acc_drop: float | None = Field(None, ge=0, description="gate: every point within this many points of dense")
    search: bool = Field(False, description="search each method's targets for the most compressed point within "
                         "max_acc_drop of dense (doubling, then bisection on the log scale) instead of every target")
    search_points: int = Field(8, ge=1, description="with search: the most points one method's search tries")
    plot: str | None = Field("pareto.png", description="Pareto plot, relative to the sweep folder")


class Recipe(Section):
    name: str | None = None
    description: str | None = None
    data: DataSpec | None = Field(None, description=f"data spec: {SPEC_HELP} (DIR relative to the recipe's folder)")
    model: ModelSection
    train: TrainSection | None = None
    compress: CompressSection | None = None
    report: ReportSection | None = None
    finetune: FinetuneSection | None = None
    export: ExportSection | None = None
    sweep: SweepSection | None = None
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads torch computes with for the whole "
                                "run (default: torch's, one per core); see docs/performance.md")


def recipe_schema() -> dict[str, Any]:
    return Recipe.model_json_schema()


def parse_recipe(data: Any, source: str = "recipe") -> Recipe:
    if not isinstance(data, dict):
        raise BadInputError(f"{source}: a recipe is a YAML mapping with at least a 'model' section")
    return validated(Recipe, data, source)


def load_recipe(path: str | Path) -> tuple[Recipe, Path]:
    """The validated recipe and the folder its relative paths resolve against.

    A bare name (`quickstart-digits`) that is not a file here names a recipe shipped with ttsnn.
    """
    path = Path(path).expanduser()
    if not path.exists():
        shipped = shipped_recipe(str(path))
        if shipped is None:
            known = ", ".join(shipped_recipe_names())
            raise BadInputError(f"recipe {path} does not exist (recipes shipped with ttsnn: {known})")
        path = shipped
    raw = read_bytes(path, "recipe")
    try:
        data = load_yaml(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BadInputError(f"recipe {path} is not valid YAML: {abbreviate(first)}") from None
    return parse_recipe(data, str(path)), path.parent.resolve()


def check_recipe_inputs(recipe: Recipe, base: Path) -> None:
    """What can be checked before any stage runs (and before a run folder is made): the model's
    checkpoint is a readable file, zoo kwargs fit the factory, training devices exist."""
    from ttsnn_cli.storage.read import open_regular_file
    from ttsnn_cli.storage.trust import check_zoo_kwargs
    from ttsnn_cli.train.engine import check_device

    checkpoint = resolve_path(base, recipe.model.checkpoint)
    if checkpoint is not None:
        open_regular_file(checkpoint, "model.checkpoint")
    if recipe.model.arch.startswith("zoo:"):
        check_zoo_kwargs(recipe.model.arch, recipe.model.kwargs)
    for name, section in (("train", recipe.train), ("finetune", recipe.finetune)):
        if section is not None:
            try:
                check_device(section.device)
            except BadInputError as error:
                raise BadInputError(f"{name}.device: {error}") from None


def resolve_path(base: Path, value: str | None) -> Path | None:
    """A recipe path resolved against the recipe's folder (absolute paths kept)."""
    if value is None:
        return None
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def resolve_data_spec(base: Path, spec: str | None) -> str | None:
    """`cifar10:DIR` with DIR relative to the recipe's folder becomes absolute; `digits` and a
    `module:factory` stay as they are."""
    if spec is None or ":" not in spec or is_user_spec(spec):
        return spec
    kind, _, folder = spec.partition(":")
    return f"{kind}:{resolve_path(base, folder)}"


def schema_json() -> str:
    return json.dumps(recipe_schema(), indent=2)


def _shipped_folder() -> Path:
    return Path(__file__).parents[1] / "recipes"


def shipped_recipe_names() -> list[str]:
    return sorted(p.stem for p in _shipped_folder().glob("*.yaml"))


def shipped_recipe(name: str) -> Path | None:
    """The packaged recipe called `name` (with or without .yaml), if there is one."""
    if "/" in name or "\\" in name:
        return None
    candidate = _shipped_folder() / (name if name.endswith(".yaml") else f"{name}.yaml")
    return candidate if candidate.is_file() else None
