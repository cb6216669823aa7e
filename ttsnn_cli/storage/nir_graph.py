"""A NIR graph (`.nir`, HDF5) -> the nn.Sequential it describes, reading data only.

Why our own reader rather than `nir.read`: a `.nir` file is input from anywhere, and `nir.read` loads
every dataset whole before anything is checked, follows external links, and fails with whatever
h5py or numpy raises. Here every field is checked before it is read: a hard link to a plain dataset
of a numeric (or string) type, of a bounded size; the graph a chain of bounded length. Whatever is
wrong is one BadInputError naming the node and field (exit 3). Nothing in the file is ever run.

What it builds (semantics, with dt from the node's or graph's metadata `dt`, else snntorch's 1e-4):
- LIF  -> snntorch Leaky: beta = 1 - dt / tau, zero reset, threshold / (r dt / tau) (the input gain
  moved into the threshold, exact for spikes). The delayed zero reset gives the same spikes as NIR's
  reset-to-0 (and as snntorch's importer). v_leak and v_reset other than 0 are refused.
- IF   -> Leaky with beta = 1, threshold / (r dt) (NIR's dv/dt = r I; SpikingJelly writes r = 1 / dt).
  ttsnn's own IF nodes (snntorch metadata) hold the per-step gain in r, as snntorch's importer reads it.
- CubaLIF -> snntorch Synaptic: alpha = 1 - dt / tau_syn, beta = 1 - dt / tau_mem, zero reset of the
  membrane in the same step (as NIR and snntorch's importer), threshold / (w_in dt / tau_syn * r dt / tau_mem).
- LI -> `LeakyIntegrator` (membrane out), Threshold -> `Heaviside`, Scale -> `Scale`.
- Graphs ttsnn wrote carry each neuron's discrete reset in its metadata (`export.nir_neurons`):
  `reset_mechanism` and `reset_delay` are then used as written, and a reset that zeroes the whole new
  membrane (Lapicque's, Synaptic's) becomes a Synaptic (alpha = 0 for a LIF node), so ttsnn's own
  graphs come back spike for spike.
- Conv2d, Conv1d, Affine, Linear, Flatten, AvgPool2d, SumPool2d as their torch layers.
- A LIF / IF / CubaLIF on a cycle through 1 to 3 Conv / Affine nodes (as ttsnn writes RLeaky and
  RSynaptic) -> snntorch RLeaky / RSynaptic with that chain as its recurrent layer.
Refused in one line: other cycles, branches, subgraphs (snntorch's RLeaky), Delay and other nodes.
The result is the zoo's `nir_graph` model (`zoo.nir_graph`): structure as plain JSON kwargs, the numbers
as its state_dict, so bundles written from it rebuild without the `.nir` file.
"""

from __future__ import annotations

import math
import stat
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsnn_cli.errors import BadInputError, first_line
from ttsnn_cli.storage.bundle import ModelIO, file_checksum, get_meta
from ttsnn_cli.storage.read import open_regular_file
from ttsnn_cli.zoo.nir_graph import MAX_ELEMENTS, MAX_KERNEL, MAX_LAYERS, MAX_SIZE

ARCH = "zoo:nir_graph"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
DT = 1e-4
#: bounds on a file: nodes, one field, and all numbers together (float32 count)
MAX_NODES = 2 * MAX_LAYERS
MAX_FIELD = MAX_ELEMENTS
MAX_TOTAL = 1 << 27
MAX_TIMESTEPS = 100_000
_NEURONS = ("LIF", "IF", "CubaLIF", "LI", "Threshold", "Scale")


def is_nir_file(path: str | Path) -> bool:
    """Whether `path` names a NIR graph: an HDF5 file (its magic bytes), or a `.nir` name that is not
    a torch file (a bundle someone named `.nir` still loads as the bundle it is)."""
    path = Path(path).expanduser()
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the read: leave it to the guarded reader
            return path.suffix.lower() == ".nir"
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return path.suffix.lower() == ".nir"
    if head == HDF5_MAGIC:
        return True
    return path.suffix.lower() == ".nir" and not head.startswith((b"PK\x03\x04", b"\x80"))


# ------------------------------------------------------------------------------------ HDF5, guarded
class _Reader:
    """Reads fields of one open HDF5 file, each checked before it is read; counts what was read."""

    def __init__(self, path: Path) -> None:
        self.path, self.total = path, 0

    def fail(self, where: str, what: str) -> BadInputError:
        return BadInputError(f"NIR graph {self.path}: {where}: {what}")

    def child(self, group: Any, key: str, where: str, kind: str) -> Any:
        import h5py

        link = group.get(key, getlink=True)
        if link is None:
            raise self.fail(where, f"has no {key!r}")
        if not isinstance(link, h5py.HardLink):
            raise self.fail(where, f"{key!r} is a {type(link).__name__}, not data inside this file")
        item = group[key]
        wanted = h5py.Group if kind == "group" else h5py.Dataset
        if not isinstance(item, wanted):
            raise self.fail(where, f"{key!r} is not a {kind}")
        if kind == "dataset" and (item.is_virtual or item.external):
            raise self.fail(where, f"{key!r} points outside this file")
        return item

    def array(self, group: Any, key: str, where: str, optional: bool = False) -> np.ndarray | None:
        """A numeric field as a float64 array (finite), or None when optional and absent."""
        if optional and key not in group:
            return None
        data = self.child(group, key, where, "dataset")
        if data.dtype.kind not in "fiub" or data.ndim > 5:
            raise self.fail(where, f"{key} is a {data.dtype} array of {data.ndim} dims, not numbers")
        size = int(np.prod(data.shape, dtype=np.int64)) if data.shape else 1
        if size > MAX_FIELD or self.total + size > MAX_TOTAL:
            raise self.fail(where, f"{key} holds {size} numbers, more than ttsnn reads")
        self.total += size
        try:
            value = np.asarray(data[()], dtype=np.float64)
        except Exception as error:  # noqa: BLE001 - a corrupt chunk or filter is bad input
            raise self.fail(where, f"{key} cannot be read ({type(error).__name__}: {first_line(error)})") from None
        if not np.all(np.isfinite(value)):
            raise self.fail(where, f"{key} holds NaN or infinity")
        return value

    def text(self, group: Any, key: str, where: str) -> str:
        data = self.child(group, key, where, "dataset")
        if data.shape != () or data.dtype.kind not in "OS":
            raise self.fail(where, f"{key} is not a string")
        value = data[()]
        value = value.decode("utf8", "replace") if isinstance(value, bytes) else value
        if not isinstance(value, str) or len(value) > 200:
            raise self.fail(where, f"{key} is not a short string")
        return value

    def metadata(self, group: Any, where: str) -> dict[str, Any]:
        """Scalar strings and numbers of a `metadata` group (anything else is skipped, never read)."""
        import h5py

        if "metadata" not in group:
            return {}
        meta = self.child(group, "metadata", where, "group")
        out: dict[str, Any] = {}
        for key in list(meta.keys())[:64]:
            link = meta.get(key, getlink=True)
            if not isinstance(link, h5py.HardLink) or not isinstance(meta[key], h5py.Dataset):
                continue
            data = meta[key]
            if data.shape != () or data.dtype.kind not in "OSfiub" or data.is_virtual or data.external:
                continue
            value = data[()]
            if isinstance(value, bytes):
                value = value.decode("utf8", "replace")
            elif isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, str) and len(value) > 1000:
                continue
            out[key] = value
        return out


def _open(path: Path) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except Exception as error:  # noqa: BLE001 - not HDF5, truncated, locked: bad input
        raise BadInputError(f"{path} is not a readable NIR graph (HDF5): {type(error).__name__}: {first_line(error)}") from None


def _read_graph(path: Path, handle: Any) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]], dict[str, Any], _Reader]:
    """(nodes: name -> {type, group, metadata}, edges, graph metadata, the reader) of an open file."""
    reader = _Reader(path)
    root = reader.child(handle, "node", "the file", "group")
    if reader.text(root, "type", "the graph") != "NIRGraph":
        raise reader.fail("the graph", "its root node is not a NIRGraph")
    group = reader.child(root, "nodes", "the graph", "group")
    names = list(group.keys())
    if not 2 <= len(names) <= MAX_NODES:
        raise reader.fail("the graph", f"has {len(names)} nodes (ttsnn reads 2 to {MAX_NODES})")
    nodes: dict[str, dict[str, Any]] = {}
    for name in names:
        if len(name) > 200:
            raise reader.fail("the graph", "a node name is longer than 200 characters")
        node = reader.child(group, name, f"node {name}", "group")
        nodes[name] = {"type": reader.text(node, "type", f"node {name}"), "group": node,
                       "metadata": reader.metadata(node, f"node {name}")}
    data = reader.child(root, "edges", "the graph", "dataset")
    if data.ndim != 2 or data.shape[1] != 2 or data.shape[0] > 4 * MAX_NODES or data.dtype.kind not in "OS":
        raise reader.fail("the graph", "edges are not a list of (source, target) names")
    edges = []
    for source, target in data[()]:
        pair = tuple(v.decode("utf8", "replace") if isinstance(v, bytes) else str(v) for v in (source, target))
        for end in pair:
            if end not in nodes:
                raise reader.fail("the graph", f"an edge names node {end[:80]!r}, which the graph does not have")
        edges.append((pair[0], pair[1]))
    return nodes, edges, reader.metadata(root, "the graph"), reader


_LOOP_LAYERS = ("Conv2d", "Conv1d", "Affine", "Linear")


def _loops(nodes: dict[str, dict[str, Any]], edges: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Recurrent neurons: a LIF / IF / CubaLIF whose output returns to it through 1 to 3 Conv or Affine
    nodes that nothing else touches (the cycle ttsnn writes for RLeaky / RSynaptic) -> those nodes."""
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    predecessors: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in edges:
        successors[source].append(target)
        predecessors[target].append(source)
    loops: dict[str, list[str]] = {}
    for name, node in nodes.items():
        if node["type"] not in ("LIF", "IF", "CubaLIF"):
            continue
        for first in successors[name]:
            path, current = [], first
            while (len(path) < 3 and current != name and nodes[current]["type"] in _LOOP_LAYERS
                   and len(predecessors[current]) == 1 and len(successors[current]) == 1 and current not in path):
                path.append(current)
                current = successors[current][0]
            if path and current == name:
                loops[name] = path
                break
    return loops


def _chain(nodes: dict[str, dict[str, Any]], edges: list[tuple[str, str]], path: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The node names from the Input to the Output, and each recurrent neuron's loop; BadInputError
    unless the graph is one chain (recurrent loops aside)."""
    fail = lambda what: BadInputError(f"NIR graph {path}: {what}")  # noqa: E731
    edges = list(dict.fromkeys(edges))
    for name, node in nodes.items():
        if node["type"] == "NIRGraph":
            raise fail(f"node {name} is a subgraph (a recurrent neuron, as snntorch writes RLeaky): ttsnn reads chains "
                       "of layers and neurons, with recurrence as a cycle neuron -> layer -> neuron")
    loops = _loops(nodes, edges)
    inner = {n for path in loops.values() for n in path}
    edges = [(a, b) for a, b in edges if a not in inner and b not in inner]
    nodes = {n: v for n, v in nodes.items() if n not in inner}
    successors: dict[str, list[str]] = {n: [] for n in nodes}
    predecessors: dict[str, list[str]] = {n: [] for n in nodes}
    for source, target in edges:
        successors[source].append(target)
        predecessors[target].append(source)
    inputs = [n for n, v in nodes.items() if v["type"] == "Input"]
    outputs = [n for n, v in nodes.items() if v["type"] == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise fail(f"has {len(inputs)} Input and {len(outputs)} Output nodes; ttsnn reads graphs with one of each")
    order, node = [inputs[0]], inputs[0]
    while node != outputs[0]:
        if len(successors[node]) != 1:
            what = "no successor" if not successors[node] else f"{len(successors[node])} successors (a branch)"
            raise fail(f"node {node} has {what}; ttsnn reads chains Input -> ... -> Output")
        node = successors[node][0]
        if node in order:
            raise fail(f"node {node} is on a cycle (a recurrent connection); ttsnn reads chains without recurrence")
        if len(predecessors[node]) != 1:
            raise fail(f"node {node} has {len(predecessors[node])} inputs; ttsnn reads chains Input -> ... -> Output")
        order.append(node)
    if len(order) != len(nodes):
        stray = sorted(set(nodes) - set(order))[:3]
        raise fail(f"nodes {', '.join(stray)} are not on the chain from Input to Output")
    return order, loops


# ------------------------------------------------------------------------------------ node -> layer
class _Builder:
    """Walks the chain keeping the per-sample shape; each node -> (layer entry, its numbers)."""

    def __init__(self, reader: _Reader, dt: float) -> None:
        self.reader, self.dt = reader, dt
        self.layers: list[dict[str, Any]] = []
        self.state: dict[str, torch.Tensor] = {}
        self.sources: list[str] = []
        self.loop: _Builder | None = None  # while adding a recurrent neuron: its loop's layers
        self.nodes: dict[str, dict[str, Any]] = {}
        self.loops: dict[str, list[str]] = {}

    def fail(self, name: str, what: str) -> BadInputError:
        return self.reader.fail(f"node {name}", what)

    def add(self, name: str, entry: dict[str, Any], **numbers: np.ndarray) -> None:
        index = len(self.layers)
        if index >= MAX_LAYERS:
            raise self.fail(name, f"the graph has more than {MAX_LAYERS} layers")
        loop = self.loop
        if loop is not None and entry["op"] in ("leaky", "synaptic"):  # a recurrent neuron: its loop's layers
            entry = {**entry, "op": "r" + entry["op"], "recurrent": loop.layers}
            numbers.pop("alpha", None) if entry["op"] == "rleaky" else None
            for key, value in loop.state.items():
                numbers[f"recurrent.{key}"] = value.numpy()
        self.layers.append(entry)
        self.sources.append(name)
        for key, value in numbers.items():
            self.state[f"{index}.{key}"] = torch.as_tensor(np.asarray(value, dtype=np.float32))

    def ints(self, name: str, group: Any, key: str, length: int, low: int, high: int) -> list[int]:
        value = self.reader.array(group, key, f"node {name}")
        assert value is not None
        flat = value.reshape(-1)
        if flat.size == 1:
            flat = np.repeat(flat, length)
        if flat.size != length or np.any(flat != np.round(flat)) or np.any(flat < low) or np.any(flat > high):
            raise self.fail(name, f"{key} must be {length} whole number(s) from {low} to {high}, got {value.tolist()}")
        return [int(v) for v in flat]

    def per_neuron(self, name: str, value: np.ndarray, shape: tuple[int, ...], key: str) -> np.ndarray:
        """A neuron parameter as a scalar (all equal) or an array of the per-sample shape."""
        if value.size == 0:
            raise self.fail(name, f"{key} is empty")
        if np.all(value == value.reshape(-1)[0]):
            return np.asarray(value.reshape(-1)[0])
        while value.ndim > len(shape) and value.shape[0] == 1:  # a recorded batch of 1
            value = value[0]
        try:
            return np.broadcast_to(value, shape).copy()
        except ValueError:
            raise self.fail(name, f"{key} of shape {list(value.shape)} does not fit the layer's {list(shape)}") from None

    # --- the node types -------------------------------------------------------------------------
    def conv(self, name: str, group: Any, dims: int, shape: tuple[int, ...]) -> tuple[int, ...]:
        where = f"node {name}"
        weight = self.reader.array(group, "weight", where)
        assert weight is not None
        if weight.ndim != dims + 2 or min(weight.shape) < 1 or max(weight.shape[2:]) > MAX_KERNEL:
            raise self.fail(name, f"weight of shape {list(weight.shape)} is not a Conv{dims}d kernel")
        if "padding" in group and group["padding"].dtype.kind in "OS":
            padding_text = self.reader.text(group, "padding", where)
            if padding_text != "valid":
                raise self.fail(name, f"padding {padding_text!r} is not read (give numbers, or 'valid')")
            padding = [0] * dims
        else:
            padding = self.ints(name, group, "padding", dims, 0, MAX_KERNEL)
        stride = self.ints(name, group, "stride", dims, 1, MAX_KERNEL)
        dilation = self.ints(name, group, "dilation", dims, 1, MAX_KERNEL)
        groups = self.ints(name, group, "groups", 1, 1, MAX_SIZE)[0]
        bias = self.reader.array(group, "bias", where, optional=True)
        cout, cin = weight.shape[0], weight.shape[1] * groups
        if len(shape) != dims + 1 or shape[0] != cin or cout % groups:
            raise self.fail(name, f"a Conv{dims}d taking {cin} channels (groups {groups}) gets input {list(shape)}")
        if bias is not None and bias.shape != (cout,):
            raise self.fail(name, f"bias of shape {list(bias.shape)} does not fit {cout} output channels")
        out = [(size + 2 * p - d * (k - 1) - 1) // s + 1
               for size, p, d, k, s in zip(shape[1:], padding, dilation, weight.shape[2:], stride)]
        if min(out) < 1:
            raise self.fail(name, f"its output would be empty for input {list(shape)}")
        entry = {"op": f"conv{dims}d", "in": cin, "out": cout, "kernel": list(weight.shape[2:]), "stride": stride,
                 "padding": padding, "dilation": dilation, "groups": groups, "bias": bias is not None}
        numbers = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        self.add(name, entry, **numbers)
        return (cout, *out)

    def dense(self, name: str, group: Any, shape: tuple[int, ...], affine: bool) -> tuple[int, ...]:
        where = f"node {name}"
        weight = self.reader.array(group, "weight", where)
        assert weight is not None
        if weight.ndim != 2 or min(weight.shape) < 1:
            raise self.fail(name, f"weight of shape {list(weight.shape)} is not a matrix")
        bias = self.reader.array(group, "bias", where) if affine else None
        cout, cin = weight.shape
        if not shape or shape[-1] != cin:
            raise self.fail(name, f"a {cin} -> {cout} matrix gets input {list(shape)} (flatten before it)")
        if bias is not None and bias.reshape(-1).shape != (cout,):
            raise self.fail(name, f"bias of shape {list(bias.shape)} does not fit {cout} outputs")
        numbers = {"weight": weight} if bias is None else {"weight": weight, "bias": bias.reshape(-1)}
        self.add(name, {"op": "linear", "in": cin, "out": cout, "bias": bias is not None}, **numbers)
        return (*shape[:-1], cout)

    def flatten(self, name: str, group: Any, shape: tuple[int, ...]) -> tuple[int, ...]:
        start, end = (self.ints(name, group, key, 1, -len(shape), len(shape) - 1)[0] for key in ("start_dim", "end_dim"))
        first, last = start % len(shape), end % len(shape)
        if first > last:
            raise self.fail(name, f"start_dim {start} comes after end_dim {end}")
        self.add(name, {"op": "flatten", "start": first + 1, "end": last + 1})
        return (*shape[:first], math.prod(shape[first:last + 1]), *shape[last + 1:])

    def pool(self, name: str, group: Any, shape: tuple[int, ...], summed: bool) -> tuple[int, ...]:
        kernel = self.ints(name, group, "kernel_size", 2, 1, MAX_KERNEL)
        stride = self.ints(name, group, "stride", 2, 1, MAX_KERNEL)
        padding = self.ints(name, group, "padding", 2, 0, MAX_KERNEL)
        if len(shape) != 3 or any(2 * p > k for p, k in zip(padding, kernel)):
            raise self.fail(name, f"a 2-D pool gets input {list(shape)} (or padding above half its kernel)")
        out = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip(shape[1:], padding, kernel, stride)]
        if min(out) < 1:
            raise self.fail(name, f"its output would be empty for input {list(shape)}")
        self.add(name, {"op": "avgpool2d", "kernel": kernel, "stride": stride, "padding": padding, "sum": summed})
        return (shape[0], *out)

    def gain_of(self, name: str, value: np.ndarray) -> np.ndarray:
        """An input gain, snapped to 1 where float32 rounding of tau and r is all that moved it."""
        if np.any(value <= 0):
            raise self.fail(name, "its input gain (r dt / tau, w_in) must be positive")
        return np.where(np.abs(value - 1) < 1e-5, 1.0, value)

    def decay(self, name: str, tau: np.ndarray, recorded: Any, key: str) -> np.ndarray:
        if np.any(tau < self.dt):
            raise self.fail(name, f"{key} below dt = {self.dt:g} has no discrete decay in [0, 1); give the graph's dt "
                                  "in its metadata")
        value = 1 - self.dt / tau
        if isinstance(recorded, (int, float)) and np.allclose(value, recorded, atol=1e-5):
            return np.full_like(value, float(recorded))  # ttsnn's exact decay (tau went through float32)
        return value

    def neuron(self, name: str, kind: str, group: Any, meta: dict[str, Any], shape: tuple[int, ...]) -> None:
        where = f"node {name}"
        field = lambda key, optional=False: self.reader.array(group, key, where, optional)  # noqa: E731
        for key in ("v_leak", "v_reset"):
            value = field(key, optional=True)
            if value is not None and np.any(value != 0) and kind not in ("Threshold", "Scale"):
                raise self.fail(name, f"{key} other than 0 is not read (snntorch's neurons leak and reset to 0)")
        threshold_field = "threshold" if kind == "Threshold" else "v_threshold"
        if kind in ("LIF", "IF", "CubaLIF") and np.any(field(threshold_field) < 0):
            raise self.fail(name, "a negative v_threshold fires at rest; ttsnn reads thresholds >= 0")
        ours = meta.get("reset_mechanism") in ("zero", "subtract", "none") and isinstance(meta.get("reset_delay"), bool)
        reset = meta["reset_mechanism"] if ours else "zero"
        source = meta.get("snntorch") if ours else None
        whole = source in ("Lapicque", "Synaptic", "RSynaptic") and reset == "zero"
        if kind in ("LIF", "IF"):
            threshold = field("v_threshold")
            if kind == "LIF":
                tau, r = field("tau"), field("r")
                beta = self.decay(name, tau, meta.get("beta"), "tau")
                gain = self.gain_of(name, r * self.dt / tau)
            else:  # NIR's IF is dv/dt = r I: a gain of r dt per step; ttsnn's own IF nodes store the gain itself
                r = field("r")
                beta, gain = np.ones_like(r), self.gain_of(name, r if "snntorch" in meta else r * self.dt)
            # NIR's reset to 0: a Leaky's delayed zero reset gives the same spikes, an RLeaky's (which
            # zeroes the whole new membrane) does not, so a recurrent one resets in the step of the spike
            delay = meta["reset_delay"] if ours else self.loop is None
            numbers = {"beta": self.per_neuron(name, beta, shape, "tau"),
                       "threshold": self.per_neuron(name, np.broadcast_to(threshold / gain, np.broadcast_shapes(
                           threshold.shape, gain.shape)), shape, "v_threshold")}
            spec = list(np.shape(numbers["beta"])) or list(np.shape(numbers["threshold"]))
            numbers = {k: np.broadcast_to(v, spec).copy() for k, v in numbers.items()}
            if whole:  # a reset that zeroes the whole new membrane: a Synaptic without synaptic decay
                numbers["alpha"] = np.zeros(spec)
                self.add(name, {"op": "synaptic", "shape": spec, "reset": reset, "delay": delay}, **numbers)
            else:
                self.add(name, {"op": "leaky", "shape": spec, "reset": reset, "delay": delay}, **numbers)
        elif kind == "CubaLIF":
            tau_syn, tau_mem, r, w_in, threshold = (field(k) for k in ("tau_syn", "tau_mem", "r", "w_in", "v_threshold"))
            alpha = self.decay(name, tau_syn, meta.get("alpha"), "tau_syn")
            beta = self.decay(name, tau_mem, meta.get("beta"), "tau_mem")
            gain = self.gain_of(name, w_in * self.dt / tau_syn) * self.gain_of(name, r * self.dt / tau_mem)
            values = [alpha, beta, threshold / gain]
            full = np.broadcast_shapes(*(np.shape(v) for v in values))
            numbers = {k: self.per_neuron(name, np.broadcast_to(v, full), shape, k)
                       for k, v in zip(("alpha", "beta", "threshold"), values)}
            spec = next((list(np.shape(v)) for v in numbers.values() if np.ndim(v)), [])
            numbers = {k: np.broadcast_to(v, spec).copy() for k, v in numbers.items()}
            delay = meta["reset_delay"] if ours else False
            self.add(name, {"op": "synaptic", "shape": spec, "reset": reset, "delay": delay}, **numbers)
        elif kind == "LI":
            tau, r = field("tau"), field("r")
            beta = self.decay(name, tau, meta.get("beta"), "tau")
            gain = r * self.dt / tau
            gain = np.where(np.abs(gain - 1) < 1e-5, 1.0, gain)
            full = np.broadcast_shapes(beta.shape, gain.shape)
            numbers = {"beta": self.per_neuron(name, np.broadcast_to(beta, full), shape, "tau"),
                       "gain": self.per_neuron(name, np.broadcast_to(gain, full), shape, "r")}
            spec = next((list(np.shape(v)) for v in numbers.values() if np.ndim(v)), [])
            numbers = {k: np.broadcast_to(v, spec).copy() for k, v in numbers.items()}
            self.add(name, {"op": "li", "shape": spec}, **numbers)
        else:  # Threshold, Scale: stateless
            key = "threshold" if kind == "Threshold" else "scale"
            value = self.per_neuron(name, field(key), shape, key)
            self.add(name, {"op": kind.lower(), "shape": list(np.shape(value))}, **{key: value})

    def recurrence(self, name: str, shape: tuple[int, ...]) -> _Builder:
        """The layers of a recurrent neuron's loop, built on its own output shape, back to that shape."""
        loop, current = _Builder(self.reader, self.dt), shape
        loop.nodes, loop.loops = self.nodes, {}
        for member in self.loops[name]:
            current = loop.node(member, self.nodes[member], current)
        if current != shape:
            raise self.fail(name, f"its recurrent loop maps {list(shape)} to {list(current)}, not back to its shape")
        return loop

    def node(self, name: str, node: dict[str, Any], shape: tuple[int, ...]) -> tuple[int, ...]:
        kind, group = node["type"], node["group"]
        if kind == "Conv2d":
            return self.conv(name, group, 2, shape)
        if kind == "Conv1d":
            return self.conv(name, group, 1, shape)
        if kind in ("Affine", "Linear"):
            return self.dense(name, group, shape, kind == "Affine")
        if kind == "Flatten":
            return self.flatten(name, group, shape)
        if kind in ("AvgPool2d", "SumPool2d"):
            return self.pool(name, group, shape, kind == "SumPool2d")
        if kind in _NEURONS:
            self.loop = self.recurrence(name, shape) if name in self.loops else None
            try:
                self.neuron(name, kind, group, node["metadata"], shape)
            finally:
                self.loop = None
            return shape
        raise self.fail(name, f"is a {kind[:40]} node, which ttsnn does not read (it reads Conv1d, Conv2d, Affine, "
                              f"Linear, Flatten, AvgPool2d, SumPool2d, {', '.join(_NEURONS)})")


def _dt(meta: dict[str, Any], nodes: dict[str, dict[str, Any]]) -> float:
    """The graph's dt: its metadata's, else the first neuron's (ttsnn writes it there), else 1e-4."""
    values = [meta.get("dt")] + [n["metadata"].get("dt") for n in nodes.values()]
    for value in values:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1e3 and math.isfinite(value):
            return float(value)
    return DT


def read_nir(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], ModelIO, list[str]]:
    """(zoo kwargs {input_shape, layers}, state_dict, io, NIR node name per layer) of a `.nir` file."""
    path = open_regular_file(path, "NIR graph")
    handle = _open(path)
    try:
        return _read_open(path, handle)
    except RecursionError:
        raise BadInputError(f"NIR graph {path} is nested too deeply") from None
    except BadInputError:
        raise
    except Exception as error:  # noqa: BLE001 - h5py and numpy on a damaged file: a result or one typed error
        raise BadInputError(f"NIR graph {path} cannot be read: {type(error).__name__}: {first_line(error)}") from None
    finally:
        handle.close()


def _read_open(path: Path, handle: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor], ModelIO, list[str]]:
    nodes, edges, meta, reader = _read_graph(path, handle)
    order, loops = _chain(nodes, edges, path)
    declared = reader.array(nodes[order[0]]["group"], "shape", f"node {order[0]}")
    assert declared is not None
    flat = declared.reshape(-1)
    if not 1 <= flat.size <= 5 or np.any(flat < 1) or np.any(flat > MAX_SIZE) or np.any(flat != np.round(flat)):
        raise reader.fail(f"node {order[0]}", f"input shape {flat.tolist()} is not 1 to 4 sizes")
    candidates = [tuple(int(v) for v in flat)]
    if flat.size > 1 and flat[0] == 1:  # snntorch's exporter records the sample's batch of 1
        candidates.insert(0, candidates[0][1:])
    dt = _dt(meta, nodes)
    error: BadInputError | None = None
    for shape in candidates:
        if len(shape) > 4:
            continue
        builder, current = _Builder(reader, dt), shape
        builder.nodes, builder.loops = nodes, loops
        try:
            for name in order[1:-1]:
                current = builder.node(name, nodes[name], current)
        except BadInputError as failure:
            error = error or failure
            if "gets input" not in str(failure) and "does not fit the layer" not in str(failure):
                raise
            continue
        if not builder.layers:
            raise reader.fail("the graph", "has no layers between its Input and Output")
        steps = meta.get("timesteps")
        timesteps = steps if isinstance(steps, int) and not isinstance(steps, bool) and 1 <= steps <= MAX_TIMESTEPS else None
        kwargs = {"input_shape": list(shape), "layers": builder.layers}
        return kwargs, builder.state, ModelIO(tuple(shape), timesteps), builder.sources
    assert error is not None
    raise error


def load_nir(path: str | Path) -> nn.Module:
    """The network of a NIR graph as the zoo's `nir_graph` model, weights loaded, meta attached."""
    from ttsnn_cli.storage.trust import build_arch

    kwargs, state, io, _ = read_nir(path)
    model = build_arch(ARCH, kwargs)
    own = model.state_dict()
    for key, value in state.items():
        if key not in own or tuple(own[key].shape) != tuple(value.shape):
            found = list(own[key].shape) if key in own else "nothing"
            raise BadInputError(f"NIR graph {path}: {key} of shape {list(value.shape)} does not fit the layer ({found})")
        own[key] = value.to(own[key].dtype)
    model.load_state_dict(own, strict=True)
    try:
        with torch.no_grad():
            model(torch.zeros(1, *io.input_shape))  # type: ignore[misc]
    except Exception as error:  # noqa: BLE001 - the checks above should make this unreachable
        raise BadInputError(f"NIR graph {path} does not run as read: {type(error).__name__}: {first_line(error)}") from None
    finally:
        from ttsnn_cli.spiking.state import reset_states

        reset_states(model)
    meta = get_meta(model)
    meta.arch, meta.arch_kwargs, meta.io = ARCH, kwargs, io
    meta.source = {"path": str(Path(path).expanduser().resolve()), "sha256": file_checksum(Path(path).expanduser())}
    return model.eval()
