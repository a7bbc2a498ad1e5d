"""The kit's version (one place; the package and the cards read it)."""

__version__ = "0.1.0"
