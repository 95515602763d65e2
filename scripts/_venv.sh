# Shared by scripts/*: create .venv if missing, install the project (editable) with the given
# extras, and reinstall only when setup.cfg, pyproject.toml or the version (fabric/_version.py)
# changed since the last install.
ensure_venv() {
    local extras="${1:-}"
    local python="${PYTHON:-python3}"
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv" >&2
        "$python" -m venv .venv
    fi
    local stamp=".venv/.fabric-installed${extras:+-$extras}"
    local want
    want=$(cat setup.cfg pyproject.toml fabric/_version.py | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing zmq-fabric${extras:+[$extras]} into .venv" >&2
        .venv/bin/python -m pip install --quiet --upgrade pip >&2
        # A .venv made before the distribution was renamed zmq-fabric holds it as "fabric".
        if .venv/bin/python -m pip show --quiet fabric >/dev/null 2>&1; then
            .venv/bin/python -m pip uninstall --quiet --yes fabric >&2
        fi
        .venv/bin/python -m pip install --quiet -e ".${extras:+[$extras]}" >&2
        echo "$want" > "$stamp"
    fi
}
