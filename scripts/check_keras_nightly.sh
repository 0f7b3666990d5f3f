#!/usr/bin/env bash
# Runs keras_mtl's quick tests against the newest keras-nightly (the next Keras
# release line), to learn about an incompatibility before a Keras release.
#
#   bash scripts/check_keras_nightly.sh [extra pytest arguments]
#
# What it does, from the repository root, in a fresh virtual environment made
# under a temporary folder (removed at the end; KEEP_VENV=1 keeps it and prints
# where it is):
#   1. installs keras_mtl editable with its `cpu` and `test` extras, so
#      TensorFlow is the pinned release (setup.cfg's `cpu` extra);
#   2. replaces the released `keras` with the newest `keras-nightly` (both
#      install the `keras` module, so the release is uninstalled first);
#   3. runs the quick subset: pytest -m "not slow and not multiprocess".
# It prints the versions it tested and exits with pytest's status: non-zero
# when a test fails. The pinned TensorFlow is kept on purpose, so that a failure
# points at Keras rather than at TensorFlow: keras-nightly needs no newer
# TensorFlow (checked with keras-nightly 3.16.0.dev2026102704 and TensorFlow
# 2.21 in December 2026; results in CHANGELOG.md).
#
# .ci/run does not run this script: its result depends on whatever nightly was
# published that day, and it needs the package index. Run it by hand or on a
# schedule. The quick subset takes about 11 minutes on 2 idle cores, plus the
# installs.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d "${TMPDIR:-/tmp}/keras_mtl-nightly.XXXXXX")
if [ "${KEEP_VENV:-0}" = 1 ]; then
    echo "Keeping the virtual environment in $work/venv"
else
    trap 'rm -rf "$work"' EXIT
fi

python3 -m venv "$work/venv"
# shellcheck disable=SC1091
. "$work/venv/bin/activate"
python -m pip install --quiet --upgrade pip
pip install --quiet -e ".[cpu,test]"
pip uninstall --quiet --yes keras
pip install --quiet --pre --upgrade keras-nightly

python - <<'PY'
import importlib.metadata as md

import keras_mtl  # noqa: F401  (imports TensorFlow and Keras, checks the backend)
import keras
import tensorflow as tf

assert md.version("keras-nightly") == keras.__version__, (
    f"keras {keras.__version__} imported, keras-nightly {md.version('keras-nightly')} installed"
)
print(f"Testing keras_mtl with keras-nightly {keras.__version__}, TensorFlow {tf.__version__}")
PY

python -m pytest -m "not slow and not multiprocess" -q -p no:cacheprovider "$@"
