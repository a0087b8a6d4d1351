#!/usr/bin/env bash
# The device acceptance run for a GPU machine WITHOUT TensorRT (the H100/H200 lent to this
# project: CUDA 13, PyTorch, cuda-bindings, NVRTC, no network): segdeploy-check --quick, then the
# full run (the SegHead kernel and segbench --head included), then the gpu-marked tests of the
# per-thread CUDA contexts, the D-block kernel and the fused labels head.
# Fits in 8.5 minutes (each part under its own timeout); everything lands in $OUT (7 files):
#   quick.log quick.json quick.md   full.log full.json full.md   pytest.txt
# Run from the repository root:   OUT=/some/dir bash scripts/device_acceptance.sh
# The .md files paste into docs/benchmarks.md as they are. Exit code: 0 when both checks and the
# tests passed (skipped steps, such as everything TensorRT, are not failures).
set -u
OUT=${OUT:-out/device-acceptance}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# CUDA 13 installs keep ptxas and libnvrtc in the toolkit, not in the cu12 wheels' folders.
if [ -z "${SEGDEPLOY_PTXAS:-}" ]; then
    for p in "$(command -v ptxas 2>/dev/null)" /usr/local/cuda/bin/ptxas; do
        if [ -n "$p" ] && [ -x "$p" ]; then export SEGDEPLOY_PTXAS="$p"; break; fi
    done
fi
WORK=$(mktemp -d /tmp/segdeploy-acceptance.XXXXXX)

run_check() {  # name timeout [options]
    local name=$1 limit=$2
    shift 2
    {
        nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader || true
        "$PY" -c 'import segdeploy, sys; print("segdeploy", segdeploy.__file__, "python", sys.version.split()[0])'
        timeout "$limit" "$PY" -m segdeploy.check --out "$WORK/$name" "$@"
        echo "segdeploy-check $name: exit code $?"
    } >"$OUT/$name.log" 2>&1
    cp "$WORK/$name/check.json" "$OUT/$name.json" 2>/dev/null
    cp "$WORK/$name/check.md" "$OUT/$name.md" 2>/dev/null
    tail -n 1 "$OUT/$name.log"
}

run_check quick 150 --quick
run_check full 290
timeout 50 "$PY" -m pytest -q -p no:cacheprovider -m "gpu or not gpu" \
    tests/runtime/test_cuda_threads.py tests/plugins/test_kernel_target.py \
    tests/plugins/test_dblock_gpu.py tests/plugins/test_seghead_torch_gpu.py >"$OUT/pytest.txt" 2>&1
echo "pytest: exit code $?"
tail -n 3 "$OUT/pytest.txt"
rm -rf "$WORK"
! grep -q "exit code [^0]" "$OUT/quick.log" "$OUT/full.log" && tail -n 1 "$OUT/pytest.txt" | grep -qv failed
