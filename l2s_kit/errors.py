"""Errors the kit raises on bad input. Each message names the file, tensor or field and what to do."""


class L2SError(Exception):
    """Base class: a problem with the user's input that the message explains."""


class RecipeError(L2SError, ValueError):
    """A merge recipe is malformed (unknown method or parameter, out-of-range value, missing path)."""


class CheckpointError(L2SError):
    """A checkpoint folder cannot be read as a Hugging Face safetensors checkpoint."""


class IncompatibleModelsError(L2SError):
    """The checkpoints of a merge do not fit together (architecture, tensor names or shapes)."""


class NonFiniteError(L2SError):
    """A tensor holds NaN or Inf values."""


class OutputExistsError(L2SError, FileExistsError):
    """The output folder exists and overwriting was not asked for."""


# Optional extras of the package: the modules each brings (pyproject.toml's optional
# dependencies), so that a command run without one says which to install.
EXTRAS: dict[str, tuple[str, ...]] = {
    "notebooks": ("papermill", "nbconvert", "nbformat", "nbclient", "plotly", "kaleido",
                  "ipywidgets", "jupyterlab", "mistune"),
    "tune": ("optuna",),
    "eval": ("math_verify",),
    "cluster": ("ray",),
    "vllm": ("vllm",),
    "parquet": ("pyarrow",),
    "bench": ("tabulate",),
}


def missing_extra(error: ImportError) -> str | None:
    """The one-line message for an optional extra that is not installed, or None when ``error``
    is not about one (a broken install or a bug: let it show)."""
    name = (getattr(error, "name", None) or "").split(".")[0]
    for extra, modules in EXTRAS.items():
        if name in modules:
            return (f"this needs {name}, part of the '{extra}' extra, which is not installed: "
                    f"pip install 'l2s_kit[{extra}]'")
    return None


def require(extra: str) -> None:
    """Import the modules of ``extra`` now, so that a command missing one stops before any work
    (the ImportError becomes :func:`missing_extra`'s line at the command line)."""
    import importlib

    for module in EXTRAS[extra]:
        if module not in ("jupyterlab", "kaleido", "mistune"):  # used late and optionally
            importlib.import_module(module)


class FigureExportError(L2SError):
    """A figure's PNG could not be written (its tables and HTML are written all the same)."""


EXIT_FIGURES_INCOMPLETE = 3  # the work is done and written, but some PNGs are missing
