"""The fused LIF neuron (`lif_sequence._LIFSequence`) as a small compiled C kernel for CPU float32 tensors.

Why: after the PyTorch-level levers the neuron loop still makes about a dozen passes over memory per
step, forward and backward, each a separate op; one C loop per direction makes one pass and keeps the
membrane in cache across the T steps (benchmarks/bench_training.py --levers gives the figure). The
source, `lif_kernel.c`, uses no Python C API and no torch headers: the system C compiler builds it in
well under a second, once per process, into a private temporary folder (`host.private`), with the flags of this
machine (-march=native is safe because the library never leaves the process that built it), and
ctypes loads it. `neurons` checks it bitwise against the PyTorch loop before first use.

Everything else runs the PyTorch loop: CUDA and other devices, other dtypes, tensors whose steps are
not dense blocks, tracing and compiling, a machine without a C compiler, and `TTSNN_NATIVE=0`.

Threads: the kernel is built with OpenMP where the compiler has it, and splits its neurons over
torch's thread count only when its OpenMP runtime is the very one torch runs on (`threads()`): that
runtime's threads, spinning after torch's last parallel region, take the work at once. A pool of our
own beside torch's measured slower in a training step (the two pools' threads compete for the same
cores), so without a shared runtime the kernel runs on the calling thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources

import torch

from ttsnn_cli.host.private import make_private_temporary

ENV_SWITCH = "TTSNN_NATIVE"
"""Set to 0 to never build or use the compiled kernel."""

_FLAGS = ("-O3", "-ffp-contract=off", "-fno-math-errno", "-shared", "-fPIC")  # no FMA: bitwise equality
_BUILD_TIMEOUT_S = 15
"""The whole build, every flag set together: it takes well under a second; a compiler that hangs
must not stall every command for long."""
_LOAD_CHECK_TIMEOUT_S = 20

_P, _L, _F, _I = ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_int
_SIGNATURES = {  # name: (argument types, return type)
    "lif_forward": ([_P, _P, _P, _L, _L, _I, _F, _F, _F, _I], None),
    "lif_backward": ([_P, _P, _P, _L, _L, _I, _F, _I], None),
    "lif_spikes_of_state": ([_P, _P, _L, _I], None),
    "lif_openmp_runtime": ([], _P),
}
_BUILDS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())
"""Flag sets tried in turn: a compiler without OpenMP or -march=native still builds the kernel."""


def enabled() -> bool:
    """False when the user switched the kernel off (`TTSNN_NATIVE=0`)."""
    return os.environ.get(ENV_SWITCH, "1").strip() != "0"


def library() -> ctypes.CDLL | None:
    """The compiled kernel, built on first use; None when switched off or when it cannot be built."""
    return _build()[0] if enabled() else None


def build_status() -> str:
    """Why the kernel is or is not in use, in a few words (for benchmarks and bug reports)."""
    if not enabled():
        return f"switched off ({ENV_SWITCH}=0)"
    return _build()[1]


def _compiler() -> list[str] | None:
    """The compiler command: `$CC` as the shell would split it (`CC="gcc -m64"`), else cc, gcc, clang."""
    try:
        named = shlex.split(os.environ.get("CC", ""))
    except ValueError:  # unbalanced quotes
        return None
    if named:
        found = shutil.which(named[0])
        return [found, *named[1:]] if found else None
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return [found]
    return None


@functools.cache
def _build() -> tuple[ctypes.CDLL | None, str, bool]:
    """(the library or None, how it went, whether it shares torch's OpenMP runtime).

    Any failure leaves the PyTorch loop in charge: no compiler, one that hangs (killed after
    `_BUILD_TIMEOUT_S`, with everything it started), one that builds a library without our
    symbols (a C++ compiler's mangled names), or a library that cannot live in this process (an
    ASan build aborts whatever process loads it, so a child process loads it first)."""
    command = _compiler()
    if command is None:
        return None, "no C compiler found (set CC)", False
    compiler = " ".join(command)
    try:
        source = resources.files("ttsnn_cli.spiking").joinpath("lif_kernel.c").read_bytes()
        folder = make_private_temporary("ttsnn-lif-")  # nobody else can swap the library (host.private)
    except OSError as exc:  # no source installed, no private writable folder: the PyTorch loop runs
        return None, f"could not prepare the build: {exc}", False
    try:
        lib, outcome = _compile_and_load(command, source, str(folder))
    except OSError as exc:  # the source could not be written (a full disk): the PyTorch loop runs
        return None, f"could not prepare the build: {exc}", False
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if lib is None:
        return None, f"{compiler} {outcome}", False
    for name, (argtypes, restype) in _SIGNATURES.items():
        function = getattr(lib, name)
        function.argtypes, function.restype = argtypes, restype
    runtime = lib.lif_openmp_runtime()
    shared = runtime is not None and runtime == _torch_openmp_runtime()
    return lib, f"built with {compiler}" + (", on torch's OpenMP threads" if shared else ", on the calling thread"), shared


def _compile_and_load(command: list[str], source: bytes, folder: str) -> tuple[ctypes.CDLL | None, str]:
    """Build with each flag set in turn until one gives a library that loads and has our symbols."""
    source_path = os.path.join(folder, "lif_kernel.c")
    library_path = os.path.join(folder, "lif_kernel.so")
    with open(source_path, "wb") as handle:
        handle.write(source)
    first_error = "no message"
    deadline = time.monotonic() + _BUILD_TIMEOUT_S
    for extra in _BUILDS:
        left = deadline - time.monotonic()
        if left <= 0:
            return None, f"took longer than {_BUILD_TIMEOUT_S} s"
        code, stderr = _run_bounded([*command, *_FLAGS, *extra, "-o", library_path, source_path], left)
        if code is None:
            return None, stderr
        if code != 0:
            first_error = (stderr.strip().splitlines() or [first_error])[0]
            continue
        problem = _load_problem(library_path, min(left, _LOAD_CHECK_TIMEOUT_S))
        if problem:
            first_error = problem
            continue
        try:  # stays mapped after its folder is removed
            return ctypes.CDLL(library_path), "built"
        except OSError as exc:  # e.g. built against an OpenMP runtime the loader cannot find
            first_error = f"could not load it: {exc}"
    return None, f"could not build it: {first_error}"


def _run_bounded(argv: list[str], timeout: float) -> tuple[int | None, str]:
    """(exit code, stderr) of `argv`, or (None, why) when it could not run or outlived `timeout`:
    then its whole process group is killed (a compiler driver's children would otherwise hold the
    pipes open and keep us waiting)."""
    try:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        return None, f"failed to run: {exc}"
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        process.kill()
        process.wait()
        return None, f"took longer than {_BUILD_TIMEOUT_S} s and was stopped"
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    return process.returncode, stderr.decode(errors="replace")


def _load_problem(library_path: str, timeout: float) -> str | None:
    """Why loading the library into this process would fail or kill it, learned by loading it in
    a throwaway child first; None when the child found every symbol."""
    probe = ("import ctypes, sys\n"
             "lib = ctypes.CDLL(sys.argv[1])\n"
             f"for name in {sorted(_SIGNATURES)!r}: getattr(lib, name)\n")
    code, stderr = _run_bounded([sys.executable, "-I", "-c", probe, library_path], timeout)
    if code == 0:
        return None
    if code is None:
        return f"loading it {stderr}"
    last = (stderr.strip().splitlines() or [f"exit status {code}"])[-1]
    return f"the library it built does not load: {last}"


def _torch_openmp_runtime() -> int | None:
    """The address of omp_get_max_threads in the OpenMP runtime libtorch_cpu calls, found through
    the library itself (Linux: its path from /proc/self/maps); None where that cannot be told, or
    torch runs on no OpenMP runtime."""
    try:
        with open("/proc/self/maps") as handle:
            # the path is the sixth field and may hold spaces (a venv in "My Projects/")
            paths = {line.rstrip("\n").split(maxsplit=5)[-1] for line in handle
                     if line.rstrip().endswith("/libtorch_cpu.so")}
        if len(paths) != 1:
            return None
        return ctypes.cast(ctypes.CDLL(paths.pop()).omp_get_max_threads, ctypes.c_void_p).value
    except (OSError, AttributeError, IndexError):
        return None


def threads() -> int:
    """How many threads a kernel call uses: torch's thread count when the kernel shares torch's
    OpenMP runtime (see the module docstring), else 1. Set `THREADS` to override (benchmarks)."""
    if THREADS is not None:
        return THREADS
    return torch.get_num_threads() if enabled() and _build()[2] else 1


THREADS: int | None = None
"""Runtime override of `threads()` (the benchmark's lever); None: decide as `threads()` says."""


def is_dense(x: torch.Tensor) -> bool:
    """True when `x` fills one block of x.numel() elements in some memory format (no gaps, no overlap)."""
    expected = 1
    for size, stride in sorted(zip(x.shape, x.stride()), key=lambda pair: pair[1]):
        if size == 1:
            continue
        if stride != expected:
            return False
        expected *= size
    return True


def steps_are_dense(x: torch.Tensor) -> bool:
    """True when `x` [T, ...] holds its steps one after another, each a dense block of x[0].numel()
    elements: the layout the kernel indexes as [T, n]."""
    if x.dim() < 1 or x.shape[0] == 0:
        return False
    return (x.shape[0] == 1 or x.stride(0) == x[0].numel()) and is_dense(x[0])


def usable(*tensors: torch.Tensor) -> bool:
    """True when the kernel may run on these tensors: plain CPU tensors of float32 (or the uint8
    state), not being traced or compiled, and the kernel built."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return False
    if any(t.device.type != "cpu" or t.dtype not in (torch.float32, torch.uint8) for t in tensors):
        return False
    if any(type(t) is not torch.Tensor for t in tensors):
        return False  # subclasses (fake, functional) have no real memory behind data_ptr
    return library() is not None


def forward(seq: torch.Tensor, beta: float, threshold: float, width: float, mechanism: int
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes (float, 0/1) and state bytes of the LIF over `seq` [T, ...]; requires `usable(seq)`
    and `steps_are_dense(seq)`. Both outputs keep the layout of `seq`."""
    lib = library()
    assert lib is not None
    spikes = torch.empty_like(seq)
    state = torch.empty_like(seq, dtype=torch.uint8)
    steps, n = seq.shape[0], seq[0].numel()
    lib.lif_forward(seq.data_ptr(), spikes.data_ptr(), state.data_ptr(), steps, n, threads(),
                    beta, threshold, width, mechanism)
    return spikes, state


def backward(grad: torch.Tensor, state: torch.Tensor, beta: float, mechanism: int) -> torch.Tensor:
    """d loss / d seq from the spikes' gradient and the forward's state; `grad` is copied into the
    state's layout first when it arrives in another one."""
    lib = library()
    assert lib is not None
    if grad.stride() != state.stride() or not steps_are_dense(grad):
        grad = torch.empty_like(state, dtype=grad.dtype).copy_(grad)
    out = torch.empty_like(grad)
    steps, n = state.shape[0], state[0].numel()
    lib.lif_backward(grad.data_ptr(), state.data_ptr(), out.data_ptr(), steps, n, threads(), beta, mechanism)
    return out


def spikes_of_state(state: torch.Tensor) -> torch.Tensor:
    """The float 0/1 spikes a state tensor records, in its layout (one pass, not three); requires
    `usable(state)` and `is_dense(state)`."""
    lib = library()
    assert lib is not None
    spikes = torch.empty_like(state, dtype=torch.float32)
    lib.lif_spikes_of_state(state.data_ptr(), spikes.data_ptr(), state.numel(), threads())
    return spikes
