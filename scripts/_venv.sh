# Sourced by the scripts in this folder: make sure .venv exists and holds the project and its test extra.
# Re-installs only when pyproject.toml changed since the last install (a stamp file in .venv records its hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "raftqueue needs Python 3.11 or newer on PATH" >&2
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(pick_python)"
    echo "creating $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
fi

want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
have="$(cat "$VENV/.raftqueue-installed" 2>/dev/null || true)"
if [ "$want" != "$have" ]; then
    echo "installing raftqueue and its test extra into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2 || true
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[test]" >&2
    echo "$want" > "$VENV/.raftqueue-installed"
fi
