#!/usr/bin/env bash
# Build the project's environment in .venv (idempotent; re-runs only when the requirements change).
# Used by `make demo` and `make test`; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "l2s_kit needs Python >= 3.10 (found: $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi

echo "setting up $VENV (python: $("$PY" --version 2>&1)) ..."
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
# constraints.txt keeps torch on its CPU build; every install step passes it.
"$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[all,dev]' 2>&1 | grep -v "is ignored" || true
"$VENV/bin/python" -c 'import l2s_kit, torch, transformers, safetensors' \
  || { echo "installation failed (see pip output above)" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "environment ready: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
