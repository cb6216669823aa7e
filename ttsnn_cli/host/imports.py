"""The current folder on the import path, and never in front of an installed package.

Why: users name their own network as `--arch mynets:build` and run ttsnn from the folder that holds
`mynets.py`, as they would run `python -c "import mynets"`. But a folder searched first also hides
every installed package behind whatever file it holds: an `onnxruntime.py` left (or planted) there
would run in place of the real package the next time ttsnn imports it. So the current folder goes
last on the path: it supplies names nothing installed supplies, and never replaces one.
"""

from __future__ import annotations

import os
import sys


def _is_current_folder(entry: str) -> bool:
    if entry in ("", "."):
        return True
    try:
        return os.path.samefile(entry, os.getcwd())
    except OSError:
        return False


def current_folder_last() -> None:
    """Move the current folder (however spelled: '', '.', its path) to the end of `sys.path`, adding
    it when absent. Entries an installed package is found through keep their order."""
    try:
        cwd = os.getcwd()
    except OSError:  # the current folder was removed: nothing to add
        return
    sys.path[:] = [entry for entry in sys.path if not _is_current_folder(entry)] + [cwd]
