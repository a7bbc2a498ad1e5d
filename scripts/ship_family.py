"""Build the default family from scratch and ship it with the package.

    .venv/bin/python scripts/ship_family.py

Trains the default spec (``l2s_kit.zoo.DEFAULT``) into a temporary folder and moves it to
``l2s_kit/zoo/shipped/family-<spec hash>/``, replacing any family shipped before: run it after
changing the task or the spec (``tests/test_zoo.py`` fails until then), then update the numbers of the
README and docs/family.md with ``make demo``. The weights are those of this machine and thread count.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from l2s_kit.zoo import DEFAULT, SHIPPED, build_family  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        fam = build_family(tmp, DEFAULT, force=True)
        manifest = dict(fam.manifest)
        manifest.pop("matches_shipped", None)
        (fam.root / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if SHIPPED.exists():
            shutil.rmtree(SHIPPED)
        SHIPPED.mkdir(parents=True)
        shutil.copytree(fam.root, SHIPPED / fam.root.name)
    for f in (SHIPPED / fam.root.name).rglob("*"):
        if f.is_file():
            f.chmod(0o644)
    print(f"shipped {fam.root.name}: {json.dumps(manifest['weights_hash'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
