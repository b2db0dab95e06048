#!/usr/bin/env bash
# The lab's entry point: ./lab.sh up | destroy | preflight | test | verify | dashboard | diagnose | pulumi |
# kubeconfig | shell | kubectl | istioctl | tour (-h: help).
# It only makes sure the project's virtualenv venv/ exists and matches requirements.txt, then hands over to lab.cli.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "Install Python 3.11 or newer as python3, then run ./lab.sh again." >&2
  exit 1
fi
# A venv outlives the Python it was made from: after an upgrade its python is gone or another version, and pip
# would fail with a misleading message. Rebuild it then.
want=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ -e venv ]] && [[ "$(venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$want" ]]; then
  echo "venv/ was made by another Python than python3 $want: rebuilding it." >&2
  rm -rf venv
fi
# pip runs --quiet and the first build takes about a minute: one line says what the wait is.
if [[ ! -x venv/bin/python ]] || ! cmp -s requirements.txt venv/.lab-requirements.txt; then
  echo "Installing the lab's Python packages into venv/ (about a minute the first time)..." >&2
fi
if [[ ! -x venv/bin/python ]]; then
  python3 -m venv venv || {
    rm -rf venv
    echo "Install Python's venv module (Debian/Ubuntu: sudo apt-get install python3-venv), then run ./lab.sh again." >&2
    exit 1
  }
fi
# The stamp is a copy of the requirements.txt last installed: any change to the file installs again.
stamp=venv/.lab-requirements.txt
if ! cmp -s requirements.txt "$stamp"; then
  venv/bin/pip install --disable-pip-version-check --quiet --require-hashes --only-binary :all: -r requirements.txt || {
    echo "Could not install requirements.txt into venv/: check your network connection, then run ./lab.sh again." >&2
    exit 1
  }
  cp requirements.txt "$stamp"
fi
exec venv/bin/python -m lab.cli "$@"
