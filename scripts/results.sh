#!/usr/bin/env bash
# Regenerates everything docs/RESULTS.md reports, on the default preset (2 CPU cores: about 75 minutes with
# features and backbone cached). Tuning reads validation data only; the test data is touched by the final runs.
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=${1:-results}
# 1. equal-budget search on validation data (6 configurations per method); the winners ship in the package
mmcl-lab tune --preset default --budget 6 --out "$out/tune"
cp "$out/tune/tuned.yaml" mmcl_lab/tuned.yaml
# 2. every method, 5 seeds, interleaved order (timed: the 40-minute budget), then the ablation
time mmcl-lab compare --preset default --out "$out/interleaved"
mmcl-lab compare --preset default --methods comm --ablation --out "$out/interleaved"
# 3. kept memory swept (3 seeds): ER buffer sizes, COMM's and SLCA's covariance forms
mmcl-lab compare --preset default --methods er,comm,slca --memory --seeds 0,1,2 --out "$out/interleaved"
python scripts/memory_curve.py "$out/interleaved/runs.csv" docs/memory_curve.png
# 4. a second task order: seeded random, 5 seeds
mmcl-lab compare --preset default --out "$out/random" stream.order=random
# 5. one shared tower (the format no longer tells the modality): every method and the ablation, 5 seeds
mmcl-lab compare --preset default --ablation --out "$out/shared" model.shared_tower=true
