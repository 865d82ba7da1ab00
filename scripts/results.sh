#!/usr/bin/env bash
# Regenerates everything docs/RESULTS.md and docs/TUNING.md report, on the default preset, 2 CPU cores. Tuning reads
# validation data only; the test data is touched by the final runs. Every seed of a comparison draws its own split
# and pretrains its own backbone (--vary split,backbone, the default), so the intervals cover all three.
# Each step resumes what an interrupted earlier call finished (Optuna's journal, finished run folders).
set -euo pipefail
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
out=${1:-results}
# 1. the search: Optuna (TPE, median pruning), 12 configurations per method on 2 seeds, a winner at an edge of its
#    range widening it for 4 more (twice at most); the winners ship in the package
time mmcl-lab tune --preset default --trials 12 --extra 4 --rounds 2 --out "$out/tune"
cp "$out/tune/tuned.yaml" mmcl_lab/tuned.yaml
python scripts/tuning_report.py "$out/tune" docs/tuning_curves.png > "$out/tuning_tables.md"  # for docs/TUNING.md
# 2. every method, 5 seeds (split x backbone x run), interleaved order; then COMM's ablation
time mmcl-lab compare --preset default --out "$out/interleaved"
mmcl-lab compare --preset default --methods comm --ablation --out "$out/interleaved"
# 3. kept memory swept (3 seeds): ER buffer sizes, COMM's and SLCA's covariance forms
mmcl-lab compare --preset default --methods er,comm,slca --memory --seeds 0,1,2 --out "$out/interleaved"
python scripts/memory_curve.py "$out/interleaved/runs.csv" docs/memory_curve.png
# 4. a second task order: seeded random, 5 seeds
mmcl-lab compare --preset default --out "$out/random" stream.order=random
# 5. the corpus vocabulary: the backbone pretrained without the stream's class names (zero-shot and every method)
mmcl-lab compare --preset default --out "$out/no_stream_names" pretrain.stream_classes=false
# 6. what each source of variance adds: seeds that vary the run only (one split, one backbone)
mmcl-lab compare --preset default --vary none --out "$out/fixed"
# 7. one shared tower (the format no longer tells the modality): every method and the ablation, 5 seeds
mmcl-lab compare --preset default --ablation --out "$out/shared" model.shared_tower=true
