"""Jupyter's configuration for this repository (read when JupyterLab starts in this folder):
the notebooks of notebooks/ are saved without their outputs, as they are committed, so an autosave
never leaves outputs in the repository (run records would call the code dirty). Rendered copies
of runs go to figures/ (`l2s notebooks run`). Other notebooks are saved as they are."""

import os

HERE = os.path.dirname(os.path.abspath(globals().get("__file__") or "jupyter_server_config.py"))
COMMITTED = os.path.join(HERE, "notebooks")


def strip_committed_outputs(model, path=None, contents_manager=None, **kwargs):
    """A pre-save hook: a notebook of notebooks/ is written with no outputs and no execution
    counts (the open notebook keeps them)."""
    if model.get("type") != "notebook" or model.get("content") is None:
        return
    os_path = contents_manager._get_os_path(path) if contents_manager is not None else path
    if os.path.dirname(os.path.abspath(os_path or "")) != COMMITTED:
        return
    for cell in model["content"].get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None


c = get_config()  # noqa: F821 - Jupyter's config loader provides it
c.FileContentsManager.pre_save_hook = strip_committed_outputs
