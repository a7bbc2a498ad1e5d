#!/usr/bin/env bash
# Build the project's environment: Debian's Chromium (PNG export with kaleido, the browser tests),
# .venv with the package and its extras, and the widget renderer that rendered notebooks inline.
# Idempotent: the Python part re-runs only when the requirements change.
# Used by `make demo` and `make test`; safe to run by hand.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.installed
want=$(cat pyproject.toml constraints.txt scripts/setup.sh | sha256sum | cut -d' ' -f1)

# ---- system packages: Chromium (plotly PNG export via kaleido; headless and JupyterLab tests) ----
if [ -z "${L2S_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium (PNG export and browser tests) ..."
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 && SUDO="sudo -n" || {
      echo "Chromium is missing and this user cannot install it: run as root" \
           "'apt-get install chromium fonts-liberation', or set L2S_CHROMIUM to a Chromium binary" >&2
      exit 1; }
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null
  command -v chromium >/dev/null || { echo "chromium did not install (see apt output)" >&2; exit 1; }
fi

# ---- Python environment ----
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
  if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "l2s_kit needs Python >= 3.10 (found: $("$PY" --version 2>&1)); set PYTHON=python3.11" >&2
    exit 1
  fi
  echo "setting up $VENV (python: $("$PY" --version 2>&1)) ..."
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
  # constraints.txt keeps torch on its CPU build; every install step passes it. The +cpu build is
  # not on PyPI: taken from a wheel folder or mirror pip already knows, else from PyTorch's CPU
  # index ($L2S_TORCH_INDEX).
  echo "installing the package with its extras (pip, a few minutes the first time) ..."
  # (setuptools' notice about editable installs is not for the user: it is silenced)
  install() { PYTHONWARNINGS="ignore:::setuptools.command.editable_wheel" \
    "$VENV/bin/python" -m pip install -q -c constraints.txt "$@" -e '.[all,dev]' 2>&1 | grep -v "is ignored"; return "${PIPESTATUS[0]}"; }
  if ! install; then
    echo "retrying with PyTorch's CPU index for torch's CPU build ..."
    install --extra-index-url "${L2S_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" || true
  fi
  "$VENV/bin/python" -c 'import l2s_kit, torch, transformers, safetensors, papermill, playwright' \
    || { echo "installation failed (see pip output above)" >&2; exit 1; }
  echo "$want" > "$STAMP"
  echo "environment ready: torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
fi

# ---- the widget renderer inlined in rendered notebooks (npm registry, once; checked sha512) ----
"$VENV/bin/python" -c 'from l2s_kit.notebooks.assets import widget_renderer; widget_renderer()' \
  || { echo "could not fetch the Jupyter widget renderer (see the error above)" >&2; exit 1; }
