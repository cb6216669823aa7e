"""A run's outputs, planned and checked before any stage runs.

A recipe is a file its runner may not have written (a shared CI recipe, a download), and `--force`
reruns it over a folder: so the output names a recipe gives (`export.onnx`, `export.nir`,
`report.plot`, `sweep.plot`) resolve against the run folder and never leave it (no absolute path, `~`
or `..`, no symbolic link leading out). Only the command line (`--out`) chooses where a run writes.
No output of a run may be one of its inputs (the recipe, `model.checkpoint`, a baseline, teacher or
accelerator file) or another of its outputs, not even with `--force`: `export.onnx: compressed.tt`
would replace the bundle being exported by its graph. The stages take their paths from here, so the
file checked is the file written.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from ttsnn_cli.errors import BadInputError, abbreviate
from ttsnn_cli.pipeline.recipe import Recipe, resolve_path
from ttsnn_cli.pipeline.sweep import CURVES, RESULTS, TARGETLESS, point_key
from ttsnn_cli.storage.outputs import check_output_path, make_output_folder, same_file
from ttsnn_cli.train.engine import side_paths

#: the file each stage writes in the run folder (train and finetune also write their side files)
STAGE_FILES = {"train": "dense.tt", "compress": "compressed.tt", "finetune": "finetuned.tt", "report": "report.json"}
#: the sweep stage's folder inside the run folder
SWEEP_FOLDER = "sweep"


def recipe_output(folder: Path, value: str, key: str) -> Path:
    """The output a recipe names `value` (at `key`), inside `folder`; one-line BadInputError if it
    is no file name, or leaves the folder by an absolute path, `~`, `..` or a symbolic link."""
    name = PurePath(value)
    shown = abbreviate(value)
    if name.is_absolute() or value.startswith("~"):
        raise BadInputError(f"{key}: {shown} is outside the run folder; a recipe names its outputs relative to "
                            "the run folder (choose the folder with --out)")
    if ".." in name.parts:
        raise BadInputError(f"{key}: {shown} leaves the run folder ('..'); name a file inside it (choose the folder with --out)")
    if not name.parts:
        raise BadInputError(f"{key}: {shown!r} is no file name; name a file inside the run folder")
    path = folder / name
    if not _inside(path, folder):
        raise BadInputError(f"{key}: {shown} leads outside the run folder through a symbolic link; "
                            "name a file inside it")
    return path


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path`, links followed, stays in `folder` (links followed too)."""
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _with_sides(key: str, path: Path) -> dict[str, Path]:
    """A bundle that training writes, and its metrics log and resume state beside it."""
    metrics, state = side_paths(path)
    return {key: path, f"{key} metrics": metrics, f"{key} resume state": state}


def _sweep_outputs(recipe: Recipe, out_dir: Path) -> dict[str, Path]:
    section = recipe.sweep
    assert section is not None
    folder = out_dir / SWEEP_FOLDER
    files = {"sweep folder": folder, "sweep results": folder / RESULTS}
    files |= {f"sweep {method} curves": folder / name for method, name in CURVES.items()}
    for method in section.methods:
        for target in [None] if method in TARGETLESS else section.targets:
            key = point_key(method, target)
            files |= _with_sides(f"sweep point {key}", folder / f"{key}.tt")
    if section.plot:
        files["sweep.plot"] = recipe_output(folder, section.plot, "sweep.plot")
        if files["sweep.plot"].parent != folder:  # the sweep makes its folder only after its own checks
            raise BadInputError(f"sweep.plot: {abbreviate(section.plot)} is in a subfolder; name a file in the sweep folder")
    return files


def planned_outputs(recipe: Recipe, out_dir: Path) -> dict[str, Path]:
    """Every file the recipe's stages will write, by what names it (a recipe key or the stage)."""
    files: dict[str, Path] = {}
    for stage in ("train", "finetune"):
        if getattr(recipe, stage) is not None:
            files |= _with_sides(f"{stage} output", out_dir / STAGE_FILES[stage])
    for stage in ("compress", "report"):
        if getattr(recipe, stage) is not None:
            files[f"{stage} output"] = out_dir / STAGE_FILES[stage]
    if recipe.report is not None and recipe.report.plot:
        files["report.plot"] = recipe_output(out_dir, recipe.report.plot, "report.plot")
    if recipe.export is not None:
        files["export.onnx"] = recipe_output(out_dir, recipe.export.onnx, "export.onnx")
        if recipe.export.nir:
            files["export.nir"] = recipe_output(out_dir, recipe.export.nir, "export.nir")
    if recipe.sweep is not None:
        files |= _sweep_outputs(recipe, out_dir)
    return files


def planned_inputs(recipe: Recipe, base: Path, recipe_file: Path | None) -> dict[str, Path]:
    """Every file the run reads that a recipe or the command line names (not an earlier stage's output)."""
    named: dict[str, str | None] = {"model.checkpoint": recipe.model.checkpoint}
    if recipe.report is not None:
        named["report.baseline"] = recipe.report.baseline
        if recipe.report.accel.endswith((".yaml", ".yml")):
            named["report.accel"] = recipe.report.accel
    for key, section in (("finetune", recipe.finetune), ("sweep.finetune", recipe.sweep and recipe.sweep.finetune)):
        teacher = getattr(section, "teacher", None)
        if teacher not in (None, "source"):
            named[f"{key}.teacher"] = teacher
    files = {key: path for key, value in named.items() if (path := resolve_path(base, value)) is not None}
    if recipe_file is not None:
        files["the recipe"] = Path(recipe_file).expanduser()
    return files


def check_run_outputs(recipe: Recipe, base: Path, out_dir: Path, force: bool, recipe_file: Path | None = None) -> None:
    """Before any work: every output inside `out_dir`, none an input or another output (even with
    `force`), none an existing folder, link, device or FIFO; one-line BadInputError otherwise."""
    outputs = planned_outputs(recipe, out_dir)
    inputs = planned_inputs(recipe, base, recipe_file)
    seen: list[tuple[str, Path]] = []
    for key, path in outputs.items():
        if not _inside(path, out_dir):  # a fixed name in a reused folder: a link leading out
            raise BadInputError(f"{key}: {path} leads outside the run folder through a symbolic link; remove the "
                                "link or choose another --out")
        for input_key, source in inputs.items():
            if same_file(path, source):
                raise BadInputError(f"{key}: {abbreviate(str(path))} is the run's input ({input_key}); "
                                    "choose another name (not even --force replaces a run's own input)")
        for other_key, other in seen:
            if same_file(path, other):
                raise BadInputError(f"{key}: {abbreviate(str(path))} is also the run's {other_key}; choose another name")
        seen.append((key, path))
        if key == "sweep folder":
            if path.exists() and not path.is_dir():
                raise BadInputError(f"{key}: {path} is a file; the sweep stage writes a folder there (choose another --out)")
        elif path.parent.is_dir():  # a reused folder: no link, FIFO or folder where a file goes
            check_output_path(path, force=force)


def stage_output(folder: Path, value: str, key: str) -> Path:
    """`recipe_output` checked again where a stage writes it, its folder made (`plots/report.png`)."""
    path = recipe_output(folder, value, key)
    make_output_folder(path.parent)
    return path
