#!/usr/bin/env bash
# The GPU efficiency check (issue: the paper's efficiency claims on a real accelerator).
#   scripts/gpu_check.sh OUT_DIR [--official-dir DIR] [more scripts/gpu_check.py options]
# Runs with the python that has a CUDA torch (PYTHON=..., default python3) on this checkout's sources, records
# the machine (nvidia-smi) and, when TensorRT's trtexec is on PATH, builds and times an fp16 engine of the
# exported SDT-L model at 512x512 next to the PyTorch figures. Finishes in about 5 minutes on one H100/H200.
set -euo pipefail
if [ $# -lt 1 ]; then sed -n 2,6p "$0"; exit 2; fi
OUT=$1; shift
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$OUT"
{ nvidia-smi || echo "nvidia-smi: not available"; } > "$OUT/nvidia-smi.txt" 2>&1
status=0
"$PY" scripts/gpu_check.py --out "$OUT" "$@" || status=$?
if command -v trtexec >/dev/null 2>&1; then
    "$PY" -m anydepth.cli.main export --model sdt_dinov3_vitl16 --format onnx --size 512x512 --no-verify \
        -o "$OUT/sdt_vitl16_512.onnx" \
      && trtexec --onnx="$OUT/sdt_vitl16_512.onnx" --fp16 --shapes=image:1x3x512x512 \
        > "$OUT/trtexec.txt" 2>&1 || echo "trtexec failed: see $OUT/trtexec.txt"
else
    echo "trtexec: not on PATH, TensorRT engine not built" > "$OUT/trtexec.txt"
fi
exit $status
