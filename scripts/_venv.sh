# Sourced by scripts/serve and scripts/test: create .venv/ and install the project into it.
# Re-installs only when pyproject.toml changes (a stamp file remembers its hash).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON_BIN="${PYTHON:-python3}"

ensure_venv() {  # $1: extras, e.g. "server,test" or "server" (none: the client only)
  local extras="$1"
  if [ ! -x "$VENV/bin/python" ]; then
    # pyproject.toml's requires-python; pip's own refusal comes only after a long resolver message.
    if ! "$PYTHON_BIN" -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] < (3, 13))' 2>/dev/null; then
      echo "[setup] imageserve needs Python 3.11 or 3.12; $PYTHON_BIN is $("$PYTHON_BIN" --version 2>&1). Run with PYTHON=python3.11" >&2
      exit 1
    fi
    echo "[setup] creating $VENV with $($PYTHON_BIN --version)"
    "$PYTHON_BIN" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  local stamp="$VENV/.installed-$(sha256sum "$REPO_ROOT/pyproject.toml" | cut -c1-16)-${extras:-base}"
  if [ ! -f "$stamp" ]; then
    echo "[setup] installing the project and its dependencies into .venv (first run: several minutes)"
    local target="$REPO_ROOT"
    [ -n "$extras" ] && target="$REPO_ROOT[$extras]"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"
    touch "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
  export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
}
