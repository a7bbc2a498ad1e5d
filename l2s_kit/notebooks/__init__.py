"""Parameterized notebooks: run them headless with papermill and render what they made.

>>> from l2s_kit.notebooks import run_notebooks
>>> run_notebooks(["merge_explorer"], {"alphas": [0.2, 0.5]}, run="try")   # → DataFrame
>>> run_notebooks(parameters_file="notebooks/params/smoke.yaml", run="smoke")

Each notebook ``notebooks/<name>.ipynb`` runs with its own folder as working directory (as in
JupyterLab, so relative paths in parameters mean the same in both) into
``figures/<name>/<run>/``: the executed ``<name>.ipynb``, ``<name>.html`` (opens offline: plotly
figures and widget state included) and one ``NN-<title>.png`` per plotly figure. The run folder
appears when the notebook is done; an existing one is replaced only with ``overwrite``. A notebook
that fails still gets its folder, holding the executed copy with the error, and the batch goes on.

Parameters: a notebook's cell tagged ``parameters`` declares them. Every given parameter is passed
to the notebooks that declare it; a name that no notebook declares is an error. A parameters file
(YAML) maps names to values; a key naming a notebook maps to parameters for that notebook only.
A notebook that declares ``out_dir`` gets its run folder there, to write tables beside its figures.
"""

from l2s_kit.io.lazy import lazy_exports
from l2s_kit.io.runs import metrics  # the notebooks' helper

__getattr__, __dir__, _handed = lazy_exports(__name__, {
    "run": ("NotebookError", "check_run_name", "find_notebooks", "notebook_parameters",
            "run_notebooks", "setup"),
})
__all__ = ["metrics", *_handed]
