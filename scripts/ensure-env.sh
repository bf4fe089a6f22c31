#!/usr/bin/env bash
# Creates (once) the Python environment for this checkout and prints its path.
# The environment lives outside the clone, keyed by a hash of requirements.lock, so a fresh
# clone with unchanged dependencies reuses it in seconds (WhisperX pins torch 2.8: ~8 GB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${STT_ENV_CACHE:-$HOME/.cache/speechtotext}
python=${STT_PYTHON:-python3.11}
key=$( (cat "$root/requirements.lock"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
if [ ! -f "$venv/.complete" ]; then
    mkdir -p "$cache"
    command -v uv >/dev/null 2>&1 || "$python" -m pip install -q --disable-pip-version-check uv >&2
    uv=$(command -v uv || echo "$("$python" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/uv")
    echo "creating environment $venv (first run downloads several GB)" >&2
    rm -rf "$venv.tmp"
    "$uv" venv -q --python "$python" "$venv.tmp" >&2
    # The environment is built under a temporary name and moved into place only when whole,
    # so an interrupted install never leaves a half environment that looks ready.
    VIRTUAL_ENV="$venv.tmp" "$uv" pip sync -q --python "$venv.tmp/bin/python" \
        --index-url "${STT_INDEX_URL:-https://pypi.org/simple}" --link-mode copy "$root/requirements.lock" >&2
    rm -rf "$venv"
    mv "$venv.tmp" "$venv"
    # venv scripts carry the absolute path of their interpreter; point them at the final name.
    grep -rlI --null "$venv.tmp" "$venv/bin" | xargs -0 -r sed -i "s#$venv.tmp#$venv#g"
    touch "$venv/.complete"
fi
# The project itself is not part of the cached environment; it runs from this checkout.
echo "$venv"
