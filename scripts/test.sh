#!/usr/bin/env bash
# Unit tests, then every notebook under nbmake with the ci preset; offline, as CI runs them.
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MMCL_PRESET=ci
python -m pytest -q tests
python -m pytest -q --nbmake --nbmake-timeout=600 notebooks/*.ipynb notebooks/real/*.ipynb
