#!/usr/bin/env bash
# The main job: set up .venv and run the unidist demo on the embedded default backend.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec "${UNIDIST_VENV:-.venv}/bin/unidist" demo "$@"
