#!/usr/bin/env bash
# A separate virtual environment with chemprop 2.3.1, for the side-by-side benchmarks only
# (scripts/bench_featurize.py, bench_train.py, bench_screen.py, bench_fit.py --chemprop PYTHON).
# It is not part of molml's install and lives outside the repository.
#
#   scripts/setup_chemprop_venv.sh [DIR]        # default DIR: ../chemprop-venv
#   python scripts/bench_train.py --dataset esol --encoders dmpnn --chemprop DIR/bin/python
#
# torch 2.13.0 is installed first so that chemprop's torch requirement is already met by the
# CPU wheel (a plain torch requirement could pull a multi-GB CUDA build).
set -euo pipefail
DIR="${1:-$(cd "$(dirname "$0")/../.." && pwd)/chemprop-venv}"
python3 -m venv "$DIR"
"$DIR/bin/pip" install torch==2.13.0
"$DIR/bin/pip" install chemprop==2.3.1
"$DIR/bin/python" -c "import chemprop, torch; print('chemprop', chemprop.__version__, 'torch', torch.__version__)"
echo "peer interpreter: $DIR/bin/python"
