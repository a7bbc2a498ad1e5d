"""JSON lines read with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path


def json_objects(path: Path, error: type[Exception], fields: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, object) of every non-blank line of ``path``; a line that is not a JSON
    object, or a file that is not UTF-8, raises ``error`` naming the file and line (``fields``:
    what an object is expected to hold, for the message)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                    "save it as UTF-8 jsonl") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}, line {lineno}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise error(f"{path}, line {lineno}: expected a JSON object"
                        + (f" with fields {fields}" if fields else ""))
        yield lineno, row
