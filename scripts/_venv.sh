# Sourced by scripts/serve and scripts/test: create .venv/ and install the project into it from a lock.
# requirements/<lock>.txt pins every package with its hashes (bash scripts/lock refreshes it), so a
# fresh clone installs exactly what CI installed. Re-installs only when the lock or pyproject.toml
# changes (a stamp file remembers their hash).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"
PIP_VERSION="26.3"

ensure_venv() {  # $1: the lock, "serve" (server, s3, postgresql) or "test" (all of serve's, plus the tests')
  local lock="$REPO_ROOT/requirements/$1.txt"
  if [ ! -x "$VENV/bin/python" ]; then
    # pyproject.toml's requires-python; pip's own refusal comes only after a long resolver message.
    if ! "$PYTHON_BIN" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null; then
      echo "[setup] imageserve needs Python 3.11 or 3.12; $PYTHON_BIN is $("$PYTHON_BIN" --version 2>&1). Run with PYTHON=python3.11" >&2
      exit 1
    fi
    echo "[setup] creating $VENV with $($PYTHON_BIN --version)"
    "$PYTHON_BIN" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
  fi
  local stamp="$VENV/.installed-$(cat "$lock" "$REPO_ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$1"
  if [ ! -f "$stamp" ]; then
    echo "[setup] installing requirements/$1.txt (hash-pinned) and the project into .venv (first run: several minutes)"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$lock"
    # The project itself, editable, built with the locked setuptools (no unpinned build environment).
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e "$REPO_ROOT"
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
}
