"""Every count `ttsnn report` prints is exact in every execution style (ttsnn_cli/spiking/runner.py):
sequential, stepped, own loop (one static frame, its own T; or the sequence it is given) and
multistep.

One small network, written once per style with the same layers, is reported dense and compressed
(`conv2` only, STT, ranks 2,2,2). Its counts are written out by hand below (conv MACs =
Cout*Cin*kh*kw*Ho*Wo, linear MACs = out*in, training FLOPs = 2 per MAC, SynOps = ACs at the declared
spike rate for spike inputs + MACs for real ones), and the TT bundle's dense baseline must equal the
dense bundle's own report, whether rebuilt from the recorded architecture or given as --baseline.
(An own-loop dense baseline used to count the runner's layout probe, a batch of 3, into its one-sample
counts: four times its MACs, SynOps and forward FLOPs.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import snntorch as snn
import torch
from torch import nn
from typer.testing import CliRunner

import hw
from ttsnn_cli.cli.commands import app
from ttsnn_cli.report.counting import on_meta, probe_input, profile_model
from ttsnn_cli.report.plot import report_figure
from ttsnn_cli.report.workloads import model_workloads
from ttsnn_cli.spiking.neurons import MultiStepLIF
from ttsnn_cli.spiking.runner import execution_style
from ttsnn_cli.spiking.state import time_folded
from ttsnn_cli.storage.bundle import ModelIO, get_meta, save_bundle
from ttsnn_cli.storage.load import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

C, H = 4, 16  # channels, input size: input 1 x 16 x 16
R = 2  # TT ranks of conv2
RATE = 0.1  # the report's declared spike rate (no --data)
SHAPE = (1, H, H)


def _conv1() -> nn.Conv2d:
    return nn.Conv2d(1, C, 3, padding=1)


def _conv2() -> nn.Conv2d:
    return nn.Conv2d(C, 2 * C, 3, padding=1, bias=False)


def _fc() -> nn.Linear:
    return nn.Linear(2 * C * (H // 4) ** 2, 10)


# -- the network in each style: conv1 -> LIF -> maxpool -> conv2 -> LIF -> maxpool -> fc -> LIF.
# conv1 takes the analog frame; conv2 and fc take (max-pooled) spikes, whatever the weights.

def seq_net() -> nn.Sequential:
    return nn.Sequential(_conv1(), snn.Leaky(beta=0.8, init_hidden=True), nn.MaxPool2d(2),
                         _conv2(), snn.Leaky(beta=0.8, init_hidden=True), nn.MaxPool2d(2),
                         nn.Flatten(), _fc(), snn.Leaky(beta=0.8, init_hidden=True, output=True))


class Stepped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = _conv1(), _conv2(), _fc()
        self.lif1, self.lif2 = snn.Leaky(beta=0.8, init_hidden=True), snn.Leaky(beta=0.8, init_hidden=True)
        self.lif3 = snn.Leaky(beta=0.8, init_hidden=True, output=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.lif1(self.conv1(x)), 2)
        x = nn.functional.max_pool2d(self.lif2(self.conv2(x)), 2)
        return self.lif3(self.fc(x.flatten(1)))


class OwnLoop(nn.Module):
    """snntorch tutorial 6: init_leaky() states, `for step in range(num_steps)` on one static frame,
    returns (spk_rec, mem_rec)."""

    def __init__(self, num_steps: int = 8) -> None:
        super().__init__()
        self.num_steps = num_steps
        self.conv1, self.conv2, self.fc = _conv1(), _conv2(), _fc()
        self.lif1, self.lif2, self.lif3 = snn.Leaky(beta=0.9), snn.Leaky(beta=0.9), snn.Leaky(beta=0.9)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        spk_rec, mem_rec = [], []
        for _ in range(self.num_steps):
            spk1, mem1 = self.lif1(self.conv1(x), mem1)
            spk2, mem2 = self.lif2(self.conv2(nn.functional.max_pool2d(spk1, 2)), mem2)
            spk3, mem3 = self.lif3(self.fc(nn.functional.max_pool2d(spk2, 2).flatten(1)), mem3)
            spk_rec.append(spk3)
            mem_rec.append(mem3)
        return torch.stack(spk_rec), torch.stack(mem_rec)


class SequenceLoop(OwnLoop):
    """Its own loop over the sequence it is given, x[T, B, ...], returning batch-first [B, T, 10]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        mem1, mem2, mem3 = self.lif1.init_leaky(), self.lif2.init_leaky(), self.lif3.init_leaky()
        out = []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.conv1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.conv2(nn.functional.max_pool2d(spk1, 2)), mem2)
            spk3, mem3 = self.lif3(self.fc(nn.functional.max_pool2d(spk2, 2).flatten(1)), mem3)
            out.append(spk3)
        return torch.stack(out, dim=1)


class MultiStep(nn.Module):
    """Takes the whole sequence [T, B, ...] and folds time into the batch itself."""

    multistep = True

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = _conv1(), _conv2(), _fc()
        self.lif1, self.lif2 = MultiStepLIF(), MultiStepLIF()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[:2]
        with time_folded(self, steps):
            y = nn.functional.max_pool2d(self.lif1(self.conv1(x.flatten(0, 1))), 2)
            y = nn.functional.max_pool2d(self.lif2(self.conv2(y)), 2)
            y = self.fc(y.flatten(1))
        return y.unflatten(0, (steps, batch))


def stepped_net() -> Stepped:
    return Stepped()


def own_loop_net(num_steps: int = 8) -> OwnLoop:
    return OwnLoop(num_steps)


def sequence_loop_net() -> SequenceLoop:
    return SequenceLoop()


def multistep_net() -> MultiStep:
    return MultiStep()


#: style -> (factory, kwargs, T recorded in the bundle (None: the model's own), the T it runs,
#: layer names of conv1 / conv2 / fc)
STYLES = {
    "sequential": ("seq_net", {}, 4, 4, ("0", "3", "7")),
    "stepped": ("stepped_net", {}, 3, 3, ("conv1", "conv2", "fc")),
    "own_loop": ("own_loop_net", {"num_steps": 8}, None, 8, ("conv1", "conv2", "fc")),
    "own_loop_5": ("own_loop_net", {"num_steps": 5}, 2, 5, ("conv1", "conv2", "fc")),  # its own T beats the bundle's
    "own_loop_sequence": ("sequence_loop_net", {}, 3, 3, ("conv1", "conv2", "fc")),
    "multistep": ("multistep_net", {}, 4, 4, ("conv1", "conv2", "fc")),
}
EXPECTED_STYLE = {"own_loop_5": "own_loop", "own_loop_sequence": "own_loop"}


# -- hand counts ---------------------------------------------------------------------------------------

def conv_macs(cout: int, cin: int, kh: int, kw: int, ho: int, wo: int) -> int:
    return cout * cin * kh * kw * ho * wo


CONV1 = conv_macs(C, 1, 3, 3, H, H)  # 16 x 16, padding 1
CONV2 = conv_macs(2 * C, C, 3, 3, H // 2, H // 2)  # after a 2x2 max pool: 8 x 8
FC = 10 * 2 * C * (H // 4) ** 2  # after another: 4 x 4, flattened
# conv2 as STT cores at 8 x 8 (stride 1, padding 1: every core keeps the map size)
CORE1 = conv_macs(R, C, 1, 1, 8, 8)
CORE2 = conv_macs(R, R, 3, 1, 8, 8)
CORE3 = conv_macs(R, R, 1, 3, 8, 8)
CORE4 = conv_macs(2 * C, R, 1, 1, 8, 8)

DENSE_WEIGHTS = C * 1 * 3 * 3 + 2 * C * C * 3 * 3 + 10 * 2 * C * 16
DENSE_PARAMS = DENSE_WEIGHTS + C + 10  # conv1's and fc's biases
TT_WEIGHTS = C * 1 * 3 * 3 + (R * C + R * R * 3 + R * R * 3 + 2 * C * R) + 10 * 2 * C * 16
TT_PARAMS = TT_WEIGHTS + C + 10


def hand(tt: bool, steps: int) -> dict:
    """The report's numbers for one sample, by hand."""
    conv2 = CORE1 + CORE2 + CORE3 + CORE4 if tt else CONV2
    macs = CONV1 + conv2 + FC
    # conv1's input is the frame (no gradient): weight gradient only; every other conv / linear
    # (TT cores included) has both an input and a weight gradient, 2 FLOPs per MAC each
    forward = 2 * steps * macs
    backward = 2 * steps * (CONV1 + 2 * (conv2 + FC))
    if tt:  # only the first core reads spikes: cores 2-4 take its real-valued output
        acs, real = RATE * (CORE1 + FC), CONV1 + CORE2 + CORE3 + CORE4
    else:
        acs, real = RATE * (CONV2 + FC), CONV1
    return {"weights": TT_WEIGHTS if tt else DENSE_WEIGHTS, "params": TT_PARAMS if tt else DENSE_PARAMS,
            "macs": macs, "macs_paper": macs,  # stride 1: output resolution = input resolution
            "flops": {"forward": forward, "backward": backward, "total": forward + backward},
            "synops": {"acs": acs, "macs": real, "total": acs + real},
            "layers": {"conv1": CONV1, "conv2": conv2, "fc": FC}}


def hand_workloads(names: tuple[str, str, str], tt: bool) -> list[hw.LayerWorkload]:
    """hw's workloads of the network: input sizes as the layers see them, spike inputs as above."""
    conv1 = hw.LayerWorkload(names[0], H, H, 3, 3, 1, C, stride=(1, 1), padding=(1, 1), spike_input=False)
    conv2 = hw.LayerWorkload(names[1], 8, 8, 3, 3, C, 2 * C, stride=(1, 1), padding=(1, 1), spike_input=True)
    fc = hw.LayerWorkload(names[2], 1, 1, 1, 1, 2 * C * 16, 10, kind="linear", spike_input=True)
    return [conv1, *(hw.tt_cores(conv2, (R, R, R)) if tt else [conv2]), fc]


# -- the reports -----------------------------------------------------------------------------------------

def invoke(*args) -> dict:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout) if "--json" in args else {}


#: `--arch test_style_counts:FACTORY`: a user's module, named and trusted (as tests/conftest.py does its own)
TRUSTED = "test_style_counts"


@pytest.fixture(autouse=True)
def _this_module_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("TTSNN_TRUSTED_ARCH", TRUSTED)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict:
    """style -> (dense report, TT report with the rebuilt baseline, TT report with --baseline, dense
    bundle, TT bundle)."""
    folder = tmp_path_factory.mktemp("styles")
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(Path(__file__).parent))
        patch.setenv("TTSNN_TRUSTED_ARCH", TRUSTED)
        for style, (factory, kwargs, recorded, _, names) in STYLES.items():
            torch.manual_seed(0)
            model = globals()[factory](**kwargs)
            meta = get_meta(model)
            meta.arch, meta.arch_kwargs, meta.io = f"test_style_counts:{factory}", dict(kwargs), ModelIO(SHAPE, recorded)
            dense, tt = folder / f"{style}.tt", folder / f"{style}-tt.tt"
            save_bundle(dense, model)
            invoke("compress", dense, "--ranks", R, "--include", f"^{names[1]}$", "-o", tt, "--json")
            out[style] = (invoke("report", dense, "--hw", "--json"), invoke("report", tt, "--hw", "--json"),
                          invoke("report", tt, "--baseline", dense, "--hw", "--json"), dense, tt)
    return out


@pytest.mark.parametrize("style", STYLES)
def test_the_networks_run_in_their_style(style):
    factory, kwargs, _, _, _ = STYLES[style]
    assert execution_style(globals()[factory](**kwargs)) == EXPECTED_STYLE.get(style, style)


@pytest.mark.parametrize("style", STYLES)
def test_dense_report_is_the_hand_count(reports, style):
    steps, names = STYLES[style][3], STYLES[style][4]
    doc = reports[style][0]
    want = hand(False, steps)
    assert doc["timesteps"] == steps
    assert doc["params"] == {"total": want["params"], "weights": want["weights"]}
    assert doc["macs_per_timestep"] == want["macs"]
    assert doc["macs_per_timestep_paper"] == want["macs_paper"]
    flops = doc["training_flops"]
    assert {k: flops[k] for k in ("forward", "backward", "total")} == want["flops"]
    syn = doc["synops_per_timestep"]
    assert {k: syn[k] for k in ("acs", "macs", "total")} == pytest.approx(want["synops"], rel=1e-12)
    rows = {row["name"]: row for row in doc["layers"]}
    assert {key: rows[name]["macs_per_timestep"] for key, name in zip(("conv1", "conv2", "fc"), names)} == want["layers"]
    assert [rows[name]["spike_input"] for name in names] == [False, True, True]


@pytest.mark.parametrize("style", STYLES)
def test_tt_report_and_its_baseline_are_the_hand_counts(reports, style):
    steps, names = STYLES[style][3], STYLES[style][4]
    dense_doc, tt_doc, given_doc = reports[style][:3]
    want, dense = hand(True, steps), hand(False, steps)
    for doc in (tt_doc, given_doc):
        assert doc["timesteps"] == steps
        rows = {row["name"]: row for row in doc["layers"]}
        assert rows[names[1]]["type"] == "tt-stt" and rows[names[1]]["ranks"] == [R, R, R]
        assert rows[names[1]]["cores"] == {"core1": CORE1, "core2": CORE2, "core3": CORE3, "core4": CORE4}
        assert doc["params"] == {"total": want["params"], "weights": want["weights"]}
        assert doc["macs_per_timestep"] == want["macs"]
        assert doc["macs_per_timestep_paper"] == want["macs_paper"]
        assert {k: doc["training_flops"][k] for k in ("forward", "backward", "total")} == want["flops"]
        syn = doc["synops_per_timestep"]
        assert {k: syn[k] for k in ("acs", "macs", "total")} == pytest.approx(want["synops"], rel=1e-12)
        # the dense baseline, by hand
        base = doc["baseline"]
        assert base["params"] == {"total": dense["params"], "weights": dense["weights"]}
        assert base["macs_per_timestep"] == dense["macs"]
        assert {k: base["training_flops"][k] for k in ("forward", "backward", "total")} == dense["flops"]
        assert base["synops_per_timestep"]["total"] == pytest.approx(dense["synops"]["total"], rel=1e-12)
        assert doc["ratios"]["macs"] == pytest.approx(dense["macs"] / want["macs"], rel=1e-12)
        assert doc["ratios"]["weights"] == pytest.approx(dense["weights"] / want["weights"], rel=1e-12)
        # per layer, as the plot draws them: a layer kept dense is its own baseline
        for key, name in zip(("conv1", "conv2", "fc"), names):
            assert rows[name]["baseline"]["macs_per_timestep"] == dense["layers"][key]
            assert rows[name]["macs_per_timestep"] == want["layers"][key]


@pytest.mark.parametrize("style", STYLES)
def test_tt_baseline_is_the_dense_bundles_own_report(reports, style):
    dense_doc, tt_doc, given_doc = reports[style][:3]
    for doc in (tt_doc, given_doc):
        base = doc["baseline"]
        for key in ("params", "macs_per_timestep", "macs_per_timestep_paper", "training_flops", "synops_per_timestep"):
            assert base[key] == dense_doc[key], key
        # the simulated dense training is the dense bundle's own
        assert doc["hw"]["dense"] == dense_doc["hw"]["dense"]


@pytest.mark.parametrize("style", STYLES)
def test_hw_workloads_and_schedules_are_the_hand_workloads(reports, style):
    steps, names = STYLES[style][3], STYLES[style][4]
    dense_doc, tt_doc = reports[style][:2]
    dense_path, tt_path = reports[style][3:]
    accel = hw.load_accelerator("sata")
    for path, tt in ((dense_path, False), (tt_path, True)):
        model = load_checkpoint(path).eval()
        profile = profile_model(model, probe_input(SHAPE, 1))
        assert model_workloads(model, profile) == hand_workloads(names, tt)
        meta = profile_model(on_meta(model).eval(), probe_input(SHAPE, 1).to("meta"))
        assert [(w.name, w.ih, w.iw) for w in model_workloads(model, meta)] == \
            [(w.name, w.ih, w.iw) for w in hand_workloads(names, tt)]
    want = hw.simulate_schedules(hand_workloads(names, True), accel, steps,
                                 dense_layers=hand_workloads(names, False))
    assert json.loads(json.dumps(want)) == tt_doc["hw"]
    assert dense_doc["hw"]["dense"] == json.loads(json.dumps(want["dense"]))


def test_the_plot_draws_kept_dense_layers_at_their_own_baseline(reports):
    """The own-loop TT report's MACs panel: conv1 and fc (kept dense) have equal bars, conv2's dense
    bar is the hand count."""
    import matplotlib.pyplot as plt

    doc = reports["own_loop"][1]
    fig = report_figure(doc)
    try:
        ax = fig.axes[1]
        dense_bars, model_bars = ax.containers[0], ax.containers[1]
        heights = {row["name"]: (d.get_height(), m.get_height())
                   for row, d, m in zip(doc["layers"], dense_bars, model_bars)}
        assert heights["conv1"] == (CONV1, CONV1)
        assert heights["fc"] == (FC, FC)
        assert heights["conv2"] == (CONV2, CORE1 + CORE2 + CORE3 + CORE4)
    finally:
        plt.close(fig)
