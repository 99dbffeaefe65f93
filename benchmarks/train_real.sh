#!/usr/bin/env bash
# Training runs on a real photo folder (default ../shared/data/cats-vs-dogs): the figures in the
# issue notes. Offline there are no ImageNet weights, so the two-stage runs start from the backbone
# of the from-scratch run (--weights BUNDLE), the way a user without internet fine-tunes.
#   benchmarks/train_real.sh [DATA] [OUT]
set -euo pipefail
DATA=${1:-../shared/data/cats-vs-dogs}
OUT=${2:-runs/real}
E=${EDGECAT:-.venv/bin/edgecat}
mkdir -p "$OUT"
t() { local n=$1; shift; echo "== $n"; /usr/bin/time -f "$n wall %e s" "$@" 2>&1 | tee "$OUT/$n.log" | grep -E "epoch|done|wall|error|: [0-9]+ epochs"; }

# 1. MobileNetV2 from scratch at 128 px (weights none -> full schedule, 6 epochs)
t mnv2-128 $E train --data "$DATA" --weights none --img-size 128 --out "$OUT/mnv2-128"
# 2. two-stage from that backbone, no augmentation: stage 1 on cached features
t mnv2-128-ft $E train --data "$DATA" --weights "$OUT/mnv2-128" --img-size 128 --no-augment --out "$OUT/mnv2-128-ft"
# 3. the same stage 1 without the feature cache (for the speed-up)
t mnv2-128-ft-nocache $E train --data "$DATA" --weights "$OUT/mnv2-128" --img-size 128 --no-augment \
  --feature-cache off --stage2-epochs 0 --out "$OUT/mnv2-128-ft-nocache"
# 4. ResNet50 from scratch at a small size
t resnet50-64 $E train --data "$DATA" --backbone resnet50 --weights none --img-size 64 --out "$OUT/resnet50-64"
