"""A test harness, not a test: in the one Python process started with TTSNN_CLAIM_CUDA=1 (its children
do not inherit it), `torch.cuda.is_available()` claims a device unless CUDA_VISIBLE_DEVICES hides it.

The default suite must pass on a machine with a GPU as on one without (`tests/conftest.py` hides a
present GPU from every test not marked `cuda`, module-scoped fixtures included). Without a GPU, this
checks that nothing in the suite or in ttsnn decides on the device before that hiding applies:

    TTSNN_CLAIM_CUDA=1 PYTHONPATH=tests/harness/claims_cuda .venv/bin/python -m pytest -m "not cuda"

Python imports `sitecustomize` from the path at start-up; nothing else puts this folder there.
"""

import os

if os.environ.pop("TTSNN_CLAIM_CUDA", None) == "1":
    import torch

    torch.cuda.is_available = lambda: os.environ.get("CUDA_VISIBLE_DEVICES", "0") != ""
