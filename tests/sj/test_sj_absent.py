"""Without SpikingJelly (the default install), ttsnn never imports it and runs every other network as before.

Runs everywhere, SpikingJelly installed or not: the child process makes it unimportable."""

from __future__ import annotations

import os
import subprocess
import sys


def test_absent_spikingjelly_costs_nothing() -> None:
    """With SpikingJelly unimportable, ttsnn never imports it, detects nothing and runs snntorch nets as before."""
    code = (
        "import sys; sys.modules['spikingjelly'] = None\n"
        "import torch, snntorch as snn\n"
        "from torch import nn\n"
        "from ttsnn_cli.spiking import spikingjelly\n"
        "from ttsnn_cli.spiking.runner import execution_style, run_timesteps\n"
        "from ttsnn_cli.kinds import kind_of\n"
        "net = nn.Sequential(nn.Conv2d(1, 2, 3), snn.Leaky(beta=0.9, init_hidden=True))\n"
        "assert not spikingjelly.loaded() and spikingjelly.step_mode(net) is None\n"
        "assert execution_style(net) == 'sequential' and kind_of(net[0]).name == 'conv2d'\n"
        "assert run_timesteps(net, torch.rand(2, 1, 1, 5, 5)).shape == (2, 1, 2, 3, 3)\n"
        "assert 'spikingjelly' not in {m.split('.')[0] for m in sys.modules if sys.modules[m] is not None}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
