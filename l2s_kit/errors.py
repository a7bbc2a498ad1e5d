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
