"""YAML as the kit reads it everywhere (recipes, grids, sweeps, notebook parameters, ``--param``):
PyYAML's safe loader, with three changes a user expects.

- A number in exponent form is a number: ``alpha: 1e-1`` is 0.1 (YAML 1.2; PyYAML follows YAML
  1.1, which reads it as the text ``"1e-1"``).
- A key given twice in one mapping is refused, naming its line (PyYAML keeps the last silently).
- Aliases (``*name``) are refused: a few lines of them can expand into billions of nodes (the
  "billion laughs"), and no file of the kit needs them.

Errors are :class:`yaml.YAMLError` s, so a caller's ``except yaml.YAMLError`` still holds.
"""

from __future__ import annotations

import re

import yaml

__all__ = ["load_mapping", "safe_load"]

_FLOAT_1_2 = re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
  | [-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
  | \.[0-9_]+(?:[eE][-+]?[0-9]+)?
  | [-+]?\.(?:inf|Inf|INF)
  | \.(?:nan|NaN|NAN))$""", re.X)


class _Loader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not accepted; write the value out",
                event.start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base constructor names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"the key {key!r} is given twice (first on line {seen[key] + 1}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_1_2, list("-+0123456789."))


def safe_load(stream):
    """:func:`yaml.safe_load` with the changes above."""
    return yaml.load(stream, Loader=_Loader)  # noqa: S506  (a SafeLoader subclass)


def load_mapping(path, what: str, error: type, shape: str = "a mapping of names to values") -> dict:
    """The YAML file ``path`` (a ``what``: "sweep file", "study file", ...), which must hold a
    mapping; a missing file, invalid YAML or another shape is ``error`` naming the file."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist")
    try:
        data = safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{what} {path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(data, dict):
        raise error(f"{what} {path}: it must be {shape}")
    return data
