"""The recipe's `sweep` stage: `ttsnn sweep` on the pipeline's dense model, in `<out>/sweep/`.

The dense model is the compress stage's input (a train stage's output, or model.checkpoint);
`finetune.teacher: source` distils it into every point. A failed `max_acc_drop` gate fails the
run with exit 4 after the result is recorded (like the report stage).
"""

from __future__ import annotations

from typing import Any

from ttsnn_cli.errors import BadInputError, GateFailedError
from ttsnn_cli.pipeline.context import RunContext
from ttsnn_cli.pipeline.outputs import SWEEP_FOLDER, recipe_output
from ttsnn_cli.pipeline.recipe import Recipe, resolve_data_spec, resolve_path
from ttsnn_cli.pipeline.stages.train import teacher_path, train_config
from ttsnn_cli.pipeline.sweep import SweepJob, run_sweep


def sweep_stage(recipe: Recipe, context: RunContext) -> dict[str, Any]:
    section = recipe.sweep
    assert section is not None
    dense = context.dense_path or resolve_path(context.base_dir, recipe.model.checkpoint)
    if dense is None:
        raise BadInputError("the sweep stage needs a trained dense model: a train stage, or model.checkpoint")
    data = resolve_data_spec(context.base_dir, section.data or recipe.data)
    if data is None:
        raise BadInputError("the sweep stage needs data: sweep.data or the recipe's data")
    context.dense_path = dense
    out_dir = context.out_dir / SWEEP_FOLDER
    job = SweepJob(
        model=dense, data=data, out_dir=out_dir, targets=list(section.targets), methods=list(section.methods),
        finetune=train_config(section.finetune), teacher=teacher_path(section.finetune.teacher, context),
        mode=section.mode, include=list(section.include), exclude=list(section.exclude),
        calib_samples=section.calib_samples, seed=section.finetune.seed, arch=recipe.model.arch,
        arch_kwargs=recipe.model.kwargs, timesteps=section.finetune.timesteps or recipe.model.timesteps,
        max_acc_drop=section.max_acc_drop, train_samples=section.train_samples,
        plot=recipe_output(out_dir, section.plot, "sweep.plot") if section.plot else None, force=context.force,
        search=section.search, search_points=section.search_points,
        layer_types=list(section.layer_types) if section.layer_types else None, linear_cores=section.linear_cores,
        budget_on=section.budget_on,
    )  # run_sweep checks the folder (a file there is bad input) and creates it after every check

    def progress(event: dict[str, Any]) -> None:
        if event["kind"] == "point":
            p = event["point"]
            target = "" if p["target"] is None else f" {p['target']:g}x"
            context.emit("message", text=(
                f"sweep {p['method']}{target}: weights "
                f"{p['weight_ratio']:.2f}x fewer, accuracy {p['accuracy_before']:.2f} -> {p['accuracy_after']:.2f} %"))

    document = run_sweep(job, progress=progress)
    bad = [g for g in document["gates"] if not g["passed"]]
    if bad:
        context.results["sweep"] = document
        if "chosen" in document:
            raise GateFailedError(f"sweep search found no compressed point within {bad[0]['limit']:g} pts of dense")
        raise GateFailedError("sweep gate failed: " + "; ".join(
            f"{g['point']} drops {g['value']:.2f} pts (limit {g['limit']:g})" for g in bad))
    if document.get("chosen"):
        context.emit("message", text=f"sweep chose {document['chosen']['point']}: {document['chosen']['reason']}")
    return document
