# Sourced by hack/test.sh and hack/demo.sh: a virtualenv with the operator, the test bed and the
# simulated device plugin (three packages, each editable) and the dev dependencies, re-installed when
# a pyproject.toml changes, and the pinned test-bed tools (cached in ~/.cache).
PY=${PYTHON:-python3}
VENV=.venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
    echo "== creating $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.aicenter-deps"
want="$(cat pyproject.toml hack/testbed/pyproject.toml hack/deviceplugin/pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ] \
    || ! "$VENV/bin/python" -c 'import aicenter, aicenter_testbed, aicenter_deviceplugin, kubernetes, pytest' >/dev/null 2>&1; then
    echo "== installing the operator, the test bed, the device plugin and the dev dependencies"
    "$VENV/bin/python" -m pip install -q -e '.[dev]' -e hack/testbed -e hack/deviceplugin
    echo "$want" >"$stamp"
fi
echo "== test-bed tools"
"$VENV/bin/python" -m aicenter_testbed.tools
