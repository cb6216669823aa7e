"""Drive any supported model over T timesteps: the one place that knows the execution styles.

Styles (`execution_style`; detection below, `--style` settles what it cannot):
- multistep: a model (the zoo's) whose forward takes the whole sequence [T, B, ...] and returns
  [T, B, ...]; it folds time into the batch itself. Marked by `model.multistep = True`.
- sequential: an nn.Sequential whose snntorch neurons all have `init_hidden=True`, written to be
  called once per step. We run it fast: each child without neurons once over all T steps with time
  folded into the batch (time-major), each neuron looped over time, and each child that hides
  neurons inside (a user's block) called once per step. `fold=False` calls the whole Sequential
  step by step instead (the reference for tests and benchmarks).
- stepped: any other module whose neurons all have `init_hidden=True` (a class called once per
  timestep): called once per step with [B, ...].
- own_loop: a module whose neurons take their state as arguments (`mem = lif.init_leaky()`), i.e.
  a class with its own `for step in range(num_steps)` loop. It is probed once (`own_loop_layout`):
  does it take one static frame [B, ...] or the sequence [T, B, ...], does it return [T, B, ...] or
  batch-first [B, T, ...], and how many steps does it run. A static-frame model runs its own number
  of steps, which the tool learns from what it returns (`resolve_timesteps`).
Detection: `model.multistep` -> multistep; a SpikingJelly network (`spikingjelly.step_mode`) ->
multistep when its neurons run in step mode "m" (`functional.set_step_mode(net, "m")`), stepped in "s"; a neuron without `init_hidden` -> own_loop; else
sequential for an nn.Sequential, stepped for any other module with neurons, own_loop without. `--style` (recorded in the bundle
as `io.style`, or `model.ttsnn_style`) overrides it.
In every style the neurons are reset first, and the result is the network's output over T,
time-major. A tuple output such as snntorch's tutorial (spk_rec, mem_rec) gives its first element,
unless the model's readout (`--readout`, recorded in the bundle as `io.readout`, or
`model.ttsnn_readout`) names another: `membrane` is the second record, an integer any record. Every
consumer (training, evaluation, report, export) runs through here, so all read the same record.
Every call of a user's model goes through here (`user_code`): whatever its forward raises (SystemExit
and a bare BaseException included) or returns that is not a floating tensor keeping the batch is a
UserCodeError (exit 3) naming that code and the call, never an internal error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ttsnn_cli.errors import BadInputError, Interrupted, TtsnnError, UserCodeError, what_it_raised
from ttsnn_cli.spiking import spikingjelly
from ttsnn_cli.spiking.state import is_neuron, reset_states, time_folded

Style = Literal["multistep", "sequential", "stepped", "own_loop"]
STYLES = ("auto", "multistep", "sequential", "stepped", "own_loop")


def forced_style(model: nn.Module) -> str | None:
    """The style the user asked for (`--style`, carried in the model's metadata), if any."""
    style = getattr(model, "ttsnn_style", None)
    if style is None:
        io = getattr(getattr(model, "ttsnn_meta", None), "io", None)
        style = getattr(io, "style", None)
    return None if style in (None, "auto") else style


def check_style(style: str | None) -> None:
    if style is not None and style not in STYLES:
        raise BadInputError(f"--style {style!r} is not one of {', '.join(STYLES)}")


def apply_style(model: nn.Module, style: str | None) -> None:
    """Run `model` in `style` from now on (`--style`; None or auto: detect)."""
    check_style(style)
    if style is not None:
        model.ttsnn_style = style  # type: ignore[assignment]


def execution_style(model: nn.Module) -> Style:
    forced = forced_style(model)
    if forced is not None:
        check_style(forced)
        if forced == "sequential" and not isinstance(model, nn.Sequential):
            raise BadInputError(f"--style sequential: {type(model).__name__} is not an nn.Sequential (use stepped)")
        return forced  # type: ignore[return-value]
    if getattr(model, "multistep", False):
        return "multistep"
    sj_mode = spikingjelly.step_mode(model)  # a SpikingJelly network: its neurons' step mode decides
    if sj_mode is not None:
        return "multistep" if sj_mode == "m" else "stepped"
    neurons = [m for m in model.modules() if is_neuron(m)]
    if not all(getattr(n, "init_hidden", False) for n in neurons):
        return "own_loop"
    if isinstance(model, nn.Sequential):
        return "sequential"
    return "stepped" if neurons else "own_loop"


def first_output(result: torch.Tensor | tuple | list) -> torch.Tensor:
    return result[0] if isinstance(result, (tuple, list)) and len(result) else result  # type: ignore[return-value]


READOUTS = ("spikes", "membrane")


def readout_index(readout: str | int | None) -> int:
    """The record index a readout names: spikes (or None) 0, membrane 1, or an explicit index 0..99."""
    if readout is None or readout == "spikes":
        return 0
    if readout == "membrane":
        return 1
    text = str(readout)
    if text.isdigit() and len(text) <= 2:
        return int(text)
    raise BadInputError(f"--readout {readout!r} is not spikes, membrane or an output index (0, 1, ...)")


def check_readout(readout: str | int | None) -> str | None:
    """`readout` as recorded (None: not asked for), refused early when malformed."""
    readout_index(readout)
    return None if readout is None else str(readout)


def model_readout(model: nn.Module) -> str | None:
    """The readout `model` was trained with: `model.ttsnn_readout`, else its metadata's `io.readout`."""
    readout = getattr(model, "ttsnn_readout", None)
    if readout is None:
        io = getattr(getattr(model, "ttsnn_meta", None), "io", None)
        readout = getattr(io, "readout", None)
    return readout


def _select(result: object, readout: str | None) -> object:
    """The record `readout` names in a model's `result`; the first when it names none."""
    index = readout_index(readout)
    if index == 0:
        return first_output(result)  # type: ignore[arg-type]
    if not isinstance(result, (tuple, list)) or len(result) <= index:
        got = f"a {type(result).__name__} of {len(result)}" if isinstance(result, (tuple, list)) else _kind(result)
        raise BadInputError(f"--readout {readout} reads record {index} of the model's output, but it returned {got}; "
                            "it needs a tuple such as (spk_rec, mem_rec), or use --readout spikes")
    return result[index]


def user_code(model: nn.Module) -> str | None:
    """How an error names the code behind `model`'s forward ("the model's forward (mynets:build)"), or
    None when ttsnn owns that code (the zoo): a failure there is ttsnn's bug and must surface as one."""
    spec = getattr(getattr(model, "ttsnn_meta", None), "arch", None)
    spec = spec if isinstance(spec, str) and spec else None
    if type(model).__module__.split(".")[0] == "ttsnn_cli" or (spec or "").startswith("zoo:"):
        return None
    role = getattr(model, "ttsnn_role", None) or "model"  # the teacher of a distillation says so
    return f"the {role}'s forward ({spec or f'{type(model).__module__}:{type(model).__qualname__}'})"


def _call(owner: str | None, function: Callable[[], object]) -> object:
    """function(), which runs a model. For a user's model
    (`owner`) whatever it raises is a UserCodeError naming it; interruptions and ttsnn's typed errors
    pass through. The TT layers ttsnn swapped in run inside that forward, so a bug of theirs would read
    as the user's too: accepted, a forward cannot be split (the layers have their own tests)."""
    if owner is None:
        return function()
    try:
        return function()
    except (KeyboardInterrupt, Interrupted, TtsnnError):
        raise
    except BaseException as error:  # noqa: BLE001 - the user's forward failing is bad input, by design
        raise UserCodeError(f"{owner} {what_it_raised(error)}", error) from error


def _kind(value: object) -> str:
    """`value`'s type for a message: "a dict", "None", "an empty tuple", ..."""
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)) and not value:
        return f"an empty {type(value).__name__}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} whose first element is {_kind(value[0])}"
    return _a(type(value).__name__)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _output(result: object, owner: str | None, batch: int, at: int, readout: str | None = None) -> torch.Tensor:
    """The output of `result` the readout names (the first by default), which a user's model must give as
    a floating tensor keeping the batch (`batch` long in dimension `at`): anything else fails later, deep
    in ttsnn, as a bug."""
    y = _select(result, readout)
    if owner is None:
        return y
    if not isinstance(y, torch.Tensor):
        problem = f"returned {_kind(result)}; return a tensor (or a tuple whose first element is one)"
    elif not y.is_floating_point():
        problem = (f"returned {_a(str(y.dtype).removeprefix('torch.'))} tensor; return a "
                   "floating-point one (spikes or membrane potentials)")
    elif y.dim() <= at or y.shape[at] != batch:
        size = f" ({batch})" if isinstance(batch, int) else ""  # symbolic while the exporter traces
        problem = f"returned shape {list(y.shape)}; keep the batch{size} in dimension {at}"
    else:
        return y
    raise UserCodeError(f"{owner} {problem}")


def _run_checked(owner: str | None, function: Callable[[], object], batch: int, at: int,
                 readout: str | None = None) -> torch.Tensor:
    return _output(_call(owner, function), owner, batch, at, readout)


def call_model(model: nn.Module, function: Callable[[], object], batch: int, at: int) -> torch.Tensor:
    """The output (the readout's record) of `function()`, which calls `model` once, guarded and checked as
    every call in `run_timesteps` is: for wrappers calling the model themselves (the exporter's, while it traces)."""
    return _run_checked(user_code(model), function, batch, at, model_readout(model))


@dataclass(frozen=True)
class LoopLayout:
    """How an own-loop model eats and returns time (see the module docstring)."""

    sequence_input: bool  # forward(x[T, B, ...]); else forward(x[B, ...]) with its own step count
    batch_first: bool  # returns [B, T, ...]
    steps: int  # the steps it returned when probed (a sequence model runs as many as it is given)


def _is_meta(x: torch.Tensor) -> bool:
    return x.device.type == "meta"


def _layout_of(y: torch.Tensor, batch: int) -> tuple[bool, int] | None:
    """(batch_first, steps) of an output over time, None when it is not [T, B, ...] / [B, T, ...]."""
    if y.dim() < 3:
        return None
    if y.shape[1] == batch and y.shape[0] != batch:
        return False, int(y.shape[0])
    if y.shape[0] == batch and y.shape[1] != batch:
        return True, int(y.shape[1])
    return None


def own_loop_layout(model: nn.Module, inputs: torch.Tensor) -> LoopLayout:
    """Probe an own-loop model once (eval, no grad, on a few samples of `inputs` [T, B, ...]).

    Tried first with one static frame, then with the sequence; the first call whose output is over
    time ([T, B, ...] or [B, T, ...], told apart by a batch size no step count shares) wins. Cached on
    the model (`_ttsnn_loop`, runtime only; copies keep it). Works on meta tensors: only shapes are read.
    """
    cached = getattr(model, "_ttsnn_loop", None)
    if isinstance(cached, LoopLayout):
        return cached
    problems: list[str] = []
    owner = user_code(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for sequence in (False, True):
                for batch in (3, 5):  # two sizes: an output [3, 3, ...] is ambiguous, [5, 5, ...] too is not
                    index = torch.arange(batch, device=inputs.device) % inputs.shape[1]
                    x = inputs[:, index] if sequence else inputs[0, index]
                    reset_states(model)
                    try:
                        y = first_output(_call(owner, lambda x=x: model(x)))  # type: ignore[arg-type]
                    except Exception as error:  # noqa: BLE001 - a model rejecting one layout is the probe's answer
                        if isinstance(error, UserCodeError) and not isinstance(error.cause, Exception):
                            raise  # sys.exit or a bare BaseException: the user's code failed, whatever the layout
                        cause = error.cause if isinstance(error, UserCodeError) and error.cause is not None else error
                        problems.append(str(cause).strip().splitlines()[0][:200] if str(cause).strip() else type(cause).__name__)
                        break
                    found = _layout_of(y, batch) if isinstance(y, torch.Tensor) else None
                    if found is not None:
                        layout = LoopLayout(sequence, *found)
                        model._ttsnn_loop = layout  # type: ignore[assignment]
                        return layout
                    if not isinstance(y, torch.Tensor) or y.dim() < 3 or y.shape[0] != y.shape[1]:
                        problems.append(f"it returned {list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}"
                                        ", not an output over time [T, B, ...] or [B, T, ...]")
                        break
    finally:
        reset_states(model)
        model.train(was_training)
    raise BadInputError(
        f"{type(model).__name__} runs its own time loop but takes neither one frame [B, ...] nor the sequence "
        f"[T, B, ...] ({'; '.join(problems[:2]) if problems else 'no answer'}); if it is called once per step, pass --style stepped"
    )


def needs_values(error: BaseException) -> bool:
    """`error` says a forward needs values, not shapes: data-dependent Python (snntorch's Leaky with
    reset_delay=False compares its reset with `.item()`), which the meta device cannot answer. The
    error may come wrapped as the user's code failing (`UserCodeError.cause`) or chained."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, (RuntimeError, NotImplementedError)) and "meta" in str(current):
            return True
        seen.add(id(current))
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
    return False


def prepare_run(model: nn.Module, inputs: torch.Tensor) -> None:
    """Learn now what `run_timesteps` would otherwise learn inside its first call: an own-loop model's
    layout, by probing it (`own_loop_layout`, cached on the model). Call it before an instrumented run
    (forward hooks, FlopCounterMode), which must see the run alone: the probe runs the model's whole
    loop on a batch of 3, so counted inside the run it quadruples every count of a one-sample run."""
    if execution_style(model) == "own_loop":
        own_loop_layout(model, inputs)


def resolve_timesteps(model: nn.Module, input_shape: tuple[int, ...] | None, requested: int | None,
                      recorded: int | None = None, option: str = "--timesteps") -> int | None:
    """T for `model`: an own-loop model taking one frame runs its own number of steps, learned from
    what it returns; a different `requested` T is bad input. Otherwise `requested`, else `recorded`."""
    if input_shape is None or execution_style(model) != "own_loop":
        return requested or recorded
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    layout = own_loop_layout(model, torch.rand(requested or recorded or 2, 1, *input_shape, device=device))
    if layout.sequence_input:
        return requested or recorded
    if requested and requested != layout.steps:
        raise BadInputError(f"{type(model).__name__} runs its own loop of {layout.steps} steps, {option} {requested} "
                            f"conflicts: drop {option} or pass {option} {layout.steps}")
    return layout.steps


def _static(inputs: torch.Tensor) -> bool:
    """Whether every step of the sequence is the same frame (never asked of meta tensors)."""
    steps = inputs.shape[0]
    return steps == 1 or bool(torch.equal(inputs[0], inputs[-1]) and torch.equal(inputs[0], inputs[steps // 2]))


def run_timesteps(model: nn.Module, inputs: torch.Tensor, fold: bool = True, reset: bool = True) -> torch.Tensor:
    """The network's output over time (its readout's record, the first by default), [T, B, ...], for an
    input sequence [T, B, ...]."""
    style = execution_style(model)
    readout = model_readout(model)
    if style == "own_loop":
        layout = own_loop_layout(model, inputs)
    if reset:
        reset_states(model)
    owner = user_code(model)
    steps, batch = inputs.shape[0], inputs.shape[1]
    if style == "multistep":
        with time_folded(model, steps):
            return _run_checked(owner, lambda: model(inputs), batch, at=1, readout=readout)
    if style == "sequential" and fold:
        return _run_checked(owner, lambda: _run_folded(model, inputs, readout), batch, at=1)
    if style in ("sequential", "stepped"):
        return _run_stepped(model, owner, inputs, readout)
    at = 0 if layout.batch_first else 1
    if layout.sequence_input:
        y = _run_checked(owner, lambda: model(inputs), batch, at, readout)
    else:
        if not _is_meta(inputs) and not _static(inputs):
            raise BadInputError(
                f"{type(model).__name__} takes one frame and loops over it itself, so it cannot take a different "
                "input at each step (rate encoding, event data): use --encoding direct, or let forward take x[T, B, ...]"
            )
        y = _run_checked(owner, lambda: model(inputs[0]), batch, at, readout)
    return y.transpose(0, 1) if layout.batch_first else y


def _run_stepped(model: nn.Module, owner: str | None, inputs: torch.Tensor, readout: str | None = None) -> torch.Tensor:
    """The model called once per step, its outputs stacked over time: each must have the first's shape."""
    outputs: list[torch.Tensor] = []
    for t in range(inputs.shape[0]):
        y = _run_checked(owner, lambda t=t: model(inputs[t]), inputs.shape[1], at=0, readout=readout)
        if owner is not None and outputs and y.shape != outputs[0].shape:
            raise UserCodeError(f"{owner} returned shape {list(y.shape)} at step {t}, but {list(outputs[0].shape)} "
                                "at step 0; return the same shape at every step")
        outputs.append(y)
    return torch.stack(outputs)


def _run_folded(seq: nn.Sequential, inputs: torch.Tensor, readout: str | None = None) -> torch.Tensor:
    """[T, B, ...] through a Sequential: neuron-free children folded, neurons and blocks stepped. The
    last child's output is the readout's record (an `output=True` neuron returns (spk, mem))."""
    steps, batch = inputs.shape[:2]
    x = inputs
    last = len(seq) - 1
    for position, child in enumerate(seq):
        pick = readout if position == last else None
        if isinstance(child, nn.Sequential):
            x = _run_folded(child, x, pick)
        elif is_neuron(child) or any(is_neuron(m) for m in child.modules()):
            x = torch.stack([_select(child(x[t]), pick) for t in range(steps)])  # type: ignore[misc]
        else:
            with time_folded(child, steps):
                y = child(x.flatten(0, 1))
            x = _select(y, pick).unflatten(0, (steps, batch))  # type: ignore[union-attr]
    return x
