"""Errors at the API boundary name arguments, not flags (`api.common.argument_wording`), and the
flag list it relies on matches the CLI's real flags."""

from __future__ import annotations

import pytest
import typer

from ttsnn_cli.api.common import BOOLEAN_FLAGS, argument_name, argument_wording
from ttsnn_cli.cli.commands import app

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("message, expected", [
    ("bundle m.tt records architecture a.b:c, which is code: ttsnn imports it only if you trust it. Pass --arch a.b:c "
     "(or --trust-arch), or add it to TTSNN_TRUSTED_ARCH",
     "bundle m.tt records architecture a.b:c, which is code: ttsnn imports it only if you trust it. Pass arch='a.b:c' "
     "(or trust_arch=True), or add it to TTSNN_TRUSTED_ARCH"),
    ("the per-step input shape is unknown: pass --input-shape C,H,W", "the per-step input shape is unknown: pass input_shape=(C, H, W)"),
    ("give --ranks (e.g. --ranks 8 or --ranks 8,16,8) or a --rank-method (vbmf, energy:0.95)",
     "give ranks= (e.g. ranks=8 or ranks='8,16,8') or a rank_method= (vbmf, energy:0.95)"),
    ("compress needs a CHECKPOINT, or --arch zoo:NAME to plan", "compress needs a model=, or arch='zoo:NAME' to plan"),
    ("--epochs must be >= 1, got 0", "epochs must be >= 1, got 0"),
    ("nothing to export: give --onnx OUT and/or --nir OUT", "nothing to export: give onnx=OUT and/or nir=OUT"),
    ("output x exists; pass --force to overwrite it", "output x exists; pass force=True to overwrite it"),
    ("--max-acc-drop needs --data (both models are evaluated)", "max_acc_drop needs data= (both models are evaluated)"),
    ("sensitivity:X measures the loss on data: give --data SPEC (digits, ...)",
     "sensitivity:X measures the loss on data: give data=SPEC (digits, ...)"),
    ("-o names the input; --no-force keeps it", "output names the input; force=False keeps it"),
    ("a value of -inf, a non-finite number, e-mail", "a value of -inf, a non-finite number, e-mail"),  # not flags
])
def test_flags_read_as_arguments(message: str, expected: str) -> None:
    assert argument_wording(message) == expected


def test_private_paths_read_as_what_the_caller_passed() -> None:
    shown = argument_wording("bundle /tmp/ttsnn-api-x/model.tt does not record its input: pass --timesteps T",
                             {"/tmp/ttsnn-api-x/model.tt": "<Net in memory>"})
    assert shown == "bundle <Net in memory> does not record its input: pass timesteps=T"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_cli_flag_without_a_value_reads_as_a_boolean(command: str) -> None:
    """A flag missing from BOOLEAN_FLAGS would read `verify=` instead of `verify=True`."""
    for param in COMMANDS[command].params:
        if getattr(param, "is_flag", False):
            flags = [o for o in param.opts if o.startswith("--")]
            assert flags and flags[0][2:] in BOOLEAN_FLAGS, f"{command} {flags}"


def test_argument_names() -> None:
    assert argument_name("--batch-size") == "batch_size"
    assert argument_name("-o") == "output"
