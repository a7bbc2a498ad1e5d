"""Package faces that only hand names on, loading each name's module on first use (PEP 562).

A package's ``__init__`` says which of its modules holds each public name::

    from l2s_kit.io.lazy import lazy_exports

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {
        "checkpoint": ("Checkpoint", "weights_hash"),
        "atomic": ("atomic_file",),
    })

``from l2s_kit.io import Checkpoint`` then imports ``l2s_kit.io.checkpoint`` and nothing else, so
light work (reading tables, drawing figures, the command line's start) never pays for torch or
the merge methods it does not use. The table is plain literals: the layout test reads it as the
face's imports.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def lazy_exports(package: str, table: Mapping[str, Iterable[str]]
            ) -> tuple[Callable[[str], object], Callable[[], list[str]], list[str]]:
    """``(__getattr__, __dir__, __all__)`` for the face of ``package``: ``table`` maps each of its
    modules (relative name) to the public names it holds. A name is looked up once, then kept on
    the package."""
    where: dict[str, str] = {}
    for module, names in table.items():
        for name in names:
            if name in where:
                raise ValueError(f"{package}: {name!r} is handed on from both "
                                 f"{where[name]!r} and {module!r}")
            where[name] = module

    def __getattr__(name: str):
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
