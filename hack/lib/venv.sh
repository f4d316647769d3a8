# Sourced by hack/test.sh and hack/demo.sh: a virtualenv with the project and its dev dependencies,
# re-installed when pyproject.toml changes, and the pinned test-bed tools (cached in ~/.cache).
PY=${PYTHON:-python3}
VENV=.venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "== creating $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.aicenter-deps"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] || ! "$VENV/bin/python" -c 'import aicenter, kubernetes, pytest' >/dev/null 2>&1; then
    echo "== installing the project and its dev dependencies"
    "$VENV/bin/python" -m pip install -q -e '.[dev]'
    echo "$want" >"$stamp"
fi
echo "== test-bed tools"
"$VENV/bin/python" -m aicenter.testbed.tools
