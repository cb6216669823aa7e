"""`ttsnn report`: params, MACs, training FLOPs, SynOps (and the hw accelerator model) of a model
against its dense baseline, with CI gates (exit 4 when one fails)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from ttsnn_cli.cli.app import app
from ttsnn_cli.cli.common import (
    STYLE_HELP,
    THREADS_HELP,
    TRUST_ARCH_HELP,
    check_options,
    err_console,
    guarded,
    print_json,
    trust_scope,
)
from ttsnn_cli.cli.compress import parse_input_shape
from ttsnn_cli.errors import GateFailedError
from ttsnn_cli.report.gates import GateLimits, failed
from ttsnn_cli.report.job import ReportJob, run_report
from ttsnn_cli.report.plot import accuracy_change
from ttsnn_cli.train.threads import check_threads, limited_threads


@app.command()
@guarded
def report(
    model: Path = typer.Argument(..., help="TT bundle (or dense checkpoint bundle) to report on."),
    baseline: Optional[Path] = typer.Option(None, help="Dense baseline (default: the bundle's arch rebuilt dense)."),
    data: Optional[str] = typer.Option(None, help="Data SPEC: measure spike rates (and accuracy for --max-acc-drop)."),
    hw: bool = typer.Option(False, "--hw", help="Simulate training on the accelerator model (every schedule)."),
    accel: Optional[str] = typer.Option(None, help="Accelerator preset (sata, tt-accel) or YAML file; implies --hw (default sata)."),
    plot: Optional[Path] = typer.Option(None, help="Write a PNG of per-layer params/MACs and hw energy."),
    timesteps: Optional[int] = typer.Option(None, help="Timesteps T when the bundle does not record it."),
    input_shape: Optional[str] = typer.Option(None, help="Per-step input shape C,H,W when the bundle does not record it."),
    data_samples: int = typer.Option(32, help="Test samples used to measure spike rates."),
    min_param_reduction: Optional[float] = typer.Option(None, help="Gate: dense/TT conv+linear weights >= X."),
    min_mac_reduction: Optional[float] = typer.Option(None, help="Gate: dense/TT MACs per timestep >= X."),
    max_energy_ratio: Optional[float] = typer.Option(None, help="Gate: hw training energy TT/dense <= X (runs hw)."),
    max_acc_drop: Optional[float] = typer.Option(None, help="Gate: dense minus TT accuracy <= PTS points (needs --data)."),
    trust_pickle: bool = typer.Option(False, "--trust-pickle", help="Allow a pickled whole module (runs code from the file!)."),
    trust_arch: bool = typer.Option(False, "--trust-arch", help=TRUST_ARCH_HELP),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing --plot file (never the model or a non-regular file)."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as one JSON document on stdout."),
    style: Optional[str] = typer.Option(None, help=STYLE_HELP),
    threads: Optional[int] = typer.Option(None, "--threads", help=THREADS_HELP),
) -> None:
    """Report params, MACs/timestep, training FLOPs and SynOps of MODEL vs its dense baseline."""
    check_options(("--timesteps", timesteps, 1, None), ("--data-samples", data_samples, 1, None),
                  ("--min-param-reduction", min_param_reduction, 0, None), ("--min-mac-reduction", min_mac_reduction, 0, None),
                  ("--max-energy-ratio", max_energy_ratio, 0, None), ("--max-acc-drop", max_acc_drop, 0, None))
    job = ReportJob(model=model, baseline=baseline, data=data, hw=hw or accel is not None, accel=accel or "sata",
                    plot=plot, timesteps=timesteps,
                    input_shape=parse_input_shape(input_shape), data_samples=data_samples, trust_pickle=trust_pickle, force=force, style=style,
                    gates=GateLimits(min_param_reduction, min_mac_reduction, max_energy_ratio, max_acc_drop))
    with trust_scope(trust_arch), limited_threads(check_threads(threads)):
        document = run_report(job)
    if json_output:
        print_json(document)
    else:
        render_report(document)
    bad = failed(document["gates"])
    if bad:
        raise GateFailedError("gate failed: " + "; ".join(
            f"{g['name']} = {g['value']:.4g} (limit {g['limit']:g})" for g in bad))


def _n(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def render_report(doc: dict[str, Any]) -> None:
    """Rich tables on stderr (the JSON is the data; this only shows it)."""
    console = err_console()
    layers = Table(title=f"{doc['model']}  ({doc['arch']}, {doc['mode'].upper()}, input {doc['input_shape']}, "
                         f"T = {doc['timesteps']})", title_justify="left")
    for column in ("layer", "type", "ranks", "weights dense", "weights", "MACs/step dense", "MACs/step",
                   "MACs/step paper conv.", "SynOps/step", "input"):
        layers.add_column(column, justify="left" if column in ("layer", "type", "input") else "right")
    for row in doc["layers"]:
        base = row.get("baseline") or {}
        syn = row.get("synops_per_timestep") or {}
        layers.add_row(row["name"], row["type"], ",".join(map(str, row["ranks"])) if row["ranks"] else "-",
                       _n(base.get("weights")), _n(row["weights"]), _n(base.get("macs_per_timestep")),
                       _n(row["macs_per_timestep"]), _n(row["macs_paper_per_timestep"]),
                       _n(syn.get("acs", 0) + syn.get("macs", 0)), "spikes" if row["spike_input"] else "real")
    console.print(layers)

    base = doc.get("baseline")
    ratios = doc.get("ratios") or {}
    totals = Table(title="totals (per sample)", title_justify="left")
    for column in ("quantity", "dense baseline", "model", "reduction"):
        totals.add_column(column, justify="left" if column == "quantity" else "right")
    b = base or {}
    rows = [
        ("params (all)", (b.get("params") or {}).get("total"), doc["params"]["total"], ratios.get("params")),
        ("weights (conv+linear, paper's)", (b.get("params") or {}).get("weights"), doc["params"]["weights"],
         ratios.get("weights")),
        ("MACs/timestep (as computed)", b.get("macs_per_timestep"), doc["macs_per_timestep"], ratios.get("macs")),
        ("MACs/timestep (paper: cores at output res.)", b.get("macs_per_timestep"), doc["macs_per_timestep_paper"],
         ratios.get("macs_paper")),
        ("training FLOPs/iteration (fwd+bwd, T steps)", (b.get("training_flops") or {}).get("total"),
         doc["training_flops"]["total"], ratios.get("training_flops")),
        ("SynOps/timestep (ACs + MACs)", (b.get("synops_per_timestep") or {}).get("total"),
         doc["synops_per_timestep"]["total"], ratios.get("synops")),
    ]
    for name, dense, value, ratio in rows:
        totals.add_row(name, _n(dense), _n(value), _x(ratio))
    console.print(totals)
    console.print(f"baseline: {b.get('source') or 'none (a dense model; pass --baseline to compare)'}; "
                  f"SynOps spike rates: {doc['synops_per_timestep']['source']}")

    if doc.get("hw"):
        accel = doc["hw_accelerator"]
        sp = doc["hw_sparsity"]
        hw = Table(title=f"simulated training, one sample (accelerator {accel['name']}: {accel['array']} PEs, "
                         f"{accel['clock_hz'] / 1e6:g} MHz, energy {accel['energy_preset']}; sp_s {sp['sp_s']:.3f} "
                         f"sp_du {sp['sp_du']:.2f} from {sp['source']})", title_justify="left")
        for column in ("schedule", "cycles", "latency ms", "energy uJ", "compute", "SRAM+SPAD", "DRAM",
                       "vs dense time", "vs dense energy"):
            hw.add_column(column, justify="left" if column == "schedule" else "right")
        for name, res in doc["hw"].items():
            comp = res["breakdown"]["energy_j"]
            vs = res.get("vs_dense") or {}
            mark = " (this model)" if name == doc.get("hw_schedule_of_model") else ""
            hw.add_row(name + mark, f"{res['cycles']:,}", f"{res['latency_s'] * 1e3:.3f}", f"{res['energy_j'] * 1e6:.2f}",
                       f"{comp['compute'] * 1e6:.2f}", f"{(comp['sram'] + comp['spad']) * 1e6:.2f}",
                       f"{comp['dram'] * 1e6:.2f}", _x(vs.get("cycles")), _x(vs.get("energy")))
        console.print(hw)
        for item in doc.get("hw_comparisons", []):
            console.print(f"  {item['name']}: time {item['time_change_pct']:+.1f} %, energy "
                          f"{item['energy_change_pct']:+.1f} %  - {item['paper']}")
        for note in (doc.get("hw_notes") or {}).values():
            console.print(f"  note: {note}")
    if doc.get("accuracy"):
        acc = doc["accuracy"]
        line = f"accuracy: model {acc['model']:.2f} %"
        if acc.get("baseline") is not None:
            line += f", baseline {acc['baseline']:.2f} %, {accuracy_change(acc['drop'])}"
        console.print(line)
    if doc["gates"]:
        gates = Table(title="gates", title_justify="left")
        for column in ("gate", "value", "limit", "verdict"):
            gates.add_column(column)
        for gate in doc["gates"]:
            gates.add_row(gate["name"], f"{gate['value']:.4g}", f"{gate['limit']:g}",
                          "[green]pass[/]" if gate["passed"] else "[bold red]FAIL[/]")
        console.print(gates)
    if doc.get("plot"):
        console.print(f"wrote {doc['plot']}")
