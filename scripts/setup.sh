#!/usr/bin/env bash
# Idempotent set-up of both environments (DESIGN.md §4):
#   .venv       Python 3.11: torch, norse, nir, timm, … and this project (editable, test extras)
#   .venv-lava  Python 3.10: lava-nc 0.10.0, nir, numpy<2, h5py and this project without torch
# Every version comes from requirements/*.lock. A stamp holding the hash of the lock file and
# pyproject.toml makes a second run a no-op. Overrides: MAIN_PYTHON, LAVA_PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# Runs a command silently; on failure shows its output and stops.
quiet() {
  local out
  if ! out=$("$@" 2>&1); then printf '%s\n' "$out" >&2; die "failed: $*"; fi
}

# A lock's companion "<name>-nodeps.lock" (if any) is installed with --no-deps after it.
nodeps_lock() { echo "${1%.lock}-nodeps.lock"; }
fingerprint() {
  local extra; extra=$(nodeps_lock "$1")
  { cat "$1" pyproject.toml; [ ! -f "$extra" ] || cat "$extra"; } | sha256sum | cut -d' ' -f1
}

python_version_ok() {  # $1 interpreter, $2 wanted "3.10"
  "$1" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '$2' else 1)" >/dev/null 2>&1
}

find_python() {  # $1 version "3.10"; $2 name of the override variable
  local want=$1 override=${!2:-} cand
  if [ -n "$override" ]; then
    python_version_ok "$override" "$want" || die "$2=$override is not a working Python $want"
    echo "$override"; return
  fi
  for cand in "python$want" python3; do
    if command -v "$cand" >/dev/null && python_version_ok "$cand" "$want"; then command -v "$cand"; return; fi
  done
  if command -v pyenv >/dev/null; then
    for cand in "$(pyenv root)"/versions/"$want".*/bin/python"$want"; do
      if [ -x "$cand" ] && python_version_ok "$cand" "$want"; then echo "$cand"; return; fi
    done
  fi
  for cand in /usr/bin/python"$want" /usr/local/bin/python"$want"; do
    if [ -x "$cand" ] && python_version_ok "$cand" "$want"; then echo "$cand"; return; fi
  done
  return 1
}

ensure_fashion_mnist() {
  [ -d /usr/share/datasets/fashion-mnist ] && return
  log "installing Debian package dataset-fashion-mnist"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq dataset-fashion-mnist >/dev/null \
    || die "could not install dataset-fashion-mnist; run: sudo apt-get install dataset-fashion-mnist"
}

make_env() {  # $1 dir, $2 python, $3 lock file, $4 editable spec
  local dir=$1 py=$2 lock=$3 spec=$4 stamp=$1/.lorsp-setup want
  want=$(fingerprint "$lock")
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$dir/bin/python" ]; then
    log "$dir is up to date"; return
  fi
  local started=$SECONDS
  log "building $dir with $("$py" --version 2>&1) from $lock"
  [ -x "$dir/bin/python" ] || "$py" -m venv "$dir"
  quiet "$dir/bin/python" -m pip install --upgrade "pip<27"
  quiet "$dir/bin/python" -m pip install -r "$lock"
  [ ! -f "$(nodeps_lock "$lock")" ] || quiet "$dir/bin/python" -m pip install --no-deps -r "$(nodeps_lock "$lock")"
  quiet "$dir/bin/python" -m pip install --no-deps -e "$spec"
  echo "$want" > "$stamp"
  log "$dir ready in $((SECONDS - started)) s ($(du -sh "$dir" | cut -f1))"
}

ensure_fashion_mnist
MAIN_PY=$(find_python 3.11 MAIN_PYTHON) || die "no Python 3.11 found; set MAIN_PYTHON=/path/to/python3.11"
make_env .venv "$MAIN_PY" requirements/main.lock "$ROOT[torch,test]"
LAVA_PY=$(find_python 3.10 LAVA_PYTHON) || die "no Python 3.10 found for Lava (lava-nc 0.10.0 needs Python < 3.11).
  Install one (e.g. 'pyenv install 3.10.13' or 'apt-get install python3.10') or set LAVA_PYTHON=/path/to/python3.10"
make_env .venv-lava "$LAVA_PY" requirements/lava.lock "$ROOT"
