#!/usr/bin/env bash
# benchmarks/gpu_check.sh OUT_DIR — the GPU check: set up a GPU machine from this repo, run
# the GPU tests and the benchmark, write the tables and charts to OUT_DIR. Within 10 minutes.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# 1. Python. A machine whose python3 already has CuPy and Numba (an image with the GPU
#    stack, like the lent H200's: CuPy, PyTorch, numba-cuda, no network) is used as it is:
#    tinyseg is installed into it without dependencies (pip -e --no-deps), or found on
#    PYTHONPATH if pip cannot. A bare machine gets a venv and `pip install -e .[dev,EXTRA]`,
#    EXTRA = gpu (cupy-cuda12x) or gpu-cuda13 (cupy-cuda13x) by the driver's CUDA version,
#    and PyTorch when it installs (for the cuDNN comparison). Wheels in $GPU_CHECK_WHEELS
#    (default: ./.whl) are used instead of an index when that folder exists.
# 2. The GPU tests: the same pytest files as on a laptop, which then run every "cuda*",
#    "cupy" and "numba_cuda" kernel on device arrays (tests/kernel_backends.py): all of
#    tests/cuda and tests/test_bench_gpu.py, and the GPU kernels' cases (-k "cuda or cupy")
#    of tests/functional and tests/test_optim_kernels.py. Failures are recorded, not fatal.
# 3. The benchmark: benchmarks/gpu_bench.py --device cuda (tinyseg/bench_gpu.py): the
#    training steps first, then every kernel of every op on the U-Net's shapes; it writes
#    its tables as it goes, so a run cut short by its time box keeps what it measured.
# 4. The report: the roofline chart and tables from whatever the benchmark wrote.
#
# OUT_DIR receives at most 8 files (what the device tool brings back):
#   gpu_check.log      every step: command, wall time, exit status, output; the environment
#   pytest-cuda.xml    JUnit report of tests/cuda + tests/test_bench_gpu.py
#   pytest-ops.xml     JUnit report of the GPU kernels' op tests
#   tests_failed.txt   one line per failed or erroring test (empty: all passed)
#   kernels.md         the benchmark's tables        kernels.json   every measurement
#   roofline.png       each kernel under the GPU's roofs
# Time boxes in seconds (no step starts after GPU_CHECK_SECONDS, default 570, from the start):
#   GPU_CHECK_SETUP=150, GPU_CHECK_TESTS=170 (both test runs), GPU_CHECK_BENCH=what is left - 40
set -u

OUT=${1:?usage: benchmarks/gpu_check.sh OUT_DIR}
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
LOG=$OUT/gpu_check.log
: > "$LOG"
START=$(date +%s)
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-570}))
SUMMARY=""
TIMED_OUT=""

log() { echo "$*" | tee -a "$LOG"; }

# step NAME LIMIT_S COMMAND...: run COMMAND in a time box (cut to the time left), log its
# output, wall time and exit status. Never stops the script.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((DEADLINE - $(date +%s)))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 10 ]; then
        log "== $name: SKIPPED (no time left)"
        SUMMARY="$SUMMARY\n  $name: skipped (no time left)"
        return 124
    fi
    log "== $name (time box ${limit}s): $*"
    local t0 t1 rc wall what
    t0=$(date +%s.%N)
    # SIGINT: pytest then writes its report, the benchmark its tables, before they stop
    timeout --signal=INT --kill-after=20 "$limit" "$@" >> "$LOG" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    what="exit $rc"
    [ "$rc" -eq 124 ] && what="TIMED OUT" && TIMED_OUT="$TIMED_OUT $name"
    log "== $name: $what, ${wall}s wall"
    SUMMARY="$SUMMARY\n  $name: $what, ${wall}s"
    return "$rc"
}

cd "$REPO" || exit 2
log "tinyseg GPU check of $(git log --oneline -1 2> /dev/null || echo 'an unversioned tree'), $(date -u '+%Y-%m-%d %H:%M UTC')"

# ----------------------------------------------------------------------------- 1. Python

PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in python3 python; do
        if command -v "$candidate" > /dev/null; then PY=$(command -v "$candidate"); break; fi
    done
fi
[ -n "$PY" ] || { log "no python3 on this machine"; exit 2; }
WHEELS=${GPU_CHECK_WHEELS:-$REPO/.whl}
PIP_SOURCE="--retries 0 --timeout 20"
[ -d "$WHEELS" ] && PIP_SOURCE="--no-index --find-links $WHEELS"
VENV=${GPU_CHECK_VENV:-/tmp/tinyseg-gpu-venv}
export PY REPO PIP_SOURCE VENV

setup() {
    if "$PY" -c "import cupy, numba" 2> /dev/null; then
        echo "$PY already has CuPy and Numba: installing tinyseg into it without dependencies"
        # shellcheck disable=SC2086
        "$PY" -m pip install -q $PIP_SOURCE --no-deps --no-build-isolation -e "$REPO" \
            || echo "(pip could not install tinyseg: it is used from PYTHONPATH)"
        return 0
    fi
    local cuda extra=gpu
    cuda=$(nvidia-smi 2> /dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -1)
    [ "$cuda" = "13" ] && extra=gpu-cuda13
    echo "bare machine: venv $VENV, pip install -e .[dev,$extra] (driver's CUDA: ${cuda:-unknown})"
    "$PY" -m venv "$VENV" || return 1
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $PIP_SOURCE -e "$REPO[dev,$extra]" || return 1
    # shellcheck disable=SC2086
    "$VENV/bin/python" -m pip install -q $PIP_SOURCE torch \
        || echo "(PyTorch did not install: the benchmark runs without the cuDNN comparison)"
}
export -f setup
step setup "${GPU_CHECK_SETUP:-150}" bash -c setup
if ! "$PY" -c "import cupy" 2> /dev/null && [ -x "$VENV/bin/python" ]; then
    PY=$VENV/bin/python
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# Numba's CUDA simulator only without a GPU: here the real target (tests/conftest.py keeps it).
export NUMBA_ENABLE_CUDASIM=0
export TINYSEG_CACHE_DIR=${TINYSEG_CACHE_DIR:-/tmp/tinyseg-cache}

SCRIPTS=$(mktemp -d)
cat > "$SCRIPTS/environment.py" << 'PYTHON'
import importlib
import platform
import sys

print("python", platform.python_version(), sys.executable)
for name in ("numpy", "numba", "numba_cuda", "cupy", "torch", "matplotlib", "hypothesis", "pytest"):
    try:
        module = importlib.import_module(name)
        print(f"{name:<11}", getattr(module, "__version__", "?"))
    except Exception as exc:
        print(f"{name:<11} MISSING ({type(exc).__name__}: {exc})")
import tinyseg
from tinyseg import backend, bench_gpu
print("tinyseg from", tinyseg.__file__, "| GPU available:", backend.gpu_available())
for op, registry in bench_gpu.registries().items():
    print(f"{op:<18}", " ".join(sorted(registry)))
if backend.gpu_available():
    cp = backend.cupy_module()
    print("CUDA runtime", cp.cuda.runtime.runtimeGetVersion(), "driver", cp.cuda.runtime.driverGetVersion())
    print("roofs:", bench_gpu.gpu_peaks(cp))
PYTHON
cat > "$SCRIPTS/failed_tests.py" << 'PYTHON'
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

for report in sorted(Path(sys.argv[1]).glob("pytest-*.xml")):
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError as exc:              # its run was cut short by the time box
        print(f"{report.name}: unreadable ({exc}): the run was cut short")
        continue
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            problem = case.find(kind)
            if problem is not None:
                message = (problem.get("message") or "").strip().splitlines()
                print(f"{kind.upper()} {case.get('classname')}::{case.get('name')}: {message[0][:300] if message else ''}")
PYTHON
cat > "$SCRIPTS/report.py" << 'PYTHON'
import json
import sys
from pathlib import Path

from tinyseg import bench_gpu

out = Path(sys.argv[1])
if not (out / "kernels.json").exists():
    sys.exit("no kernels.json: the benchmark wrote nothing")
result = json.loads((out / "kernels.json").read_text())
bench_gpu.write_reports(result, str(out))
print(f"{len(result['rows'])} op measurements, {len(result['steps'])} training steps")
for s in result["steps"]:
    print(bench_gpu._format_step(s))
PYTHON

step environment 60 bash -c "nvidia-smi; ls -l /dev/nvidia* 2>&1 | head -5; uname -a; \
    lscpu | grep -E 'Model name|^CPU\\(s\\)'; command -v nvcc g++; '$PY' '$SCRIPTS/environment.py'"

# ----------------------------------------------------------------------------- 2. the GPU tests

XDIST=()
"$PY" -c "import xdist" 2> /dev/null && XDIST=(-n 4)
TESTS_LIMIT=${GPU_CHECK_TESTS:-170}
TESTS_END=$(($(date +%s) + TESTS_LIMIT))
step tests-cuda "$((TESTS_LIMIT * 2 / 5))" "$PY" -m pytest -q -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} \
    --junitxml="$OUT/pytest-cuda.xml" tests/cuda tests/test_bench_gpu.py
step tests-ops "$((TESTS_END - $(date +%s)))" "$PY" -m pytest -q -p no:cacheprovider ${XDIST[@]+"${XDIST[@]}"} \
    --junitxml="$OUT/pytest-ops.xml" -k "cuda or cupy" tests/functional tests/test_optim_kernels.py
"$PY" "$SCRIPTS/failed_tests.py" "$OUT" > "$OUT/tests_failed.txt" 2>> "$LOG"
for name in $TIMED_OUT; do
    case $name in tests-*) echo "TIMED OUT $name: cut at its time box; its report holds the tests that ran" \
        >> "$OUT/tests_failed.txt" ;; esac
done
log "failed or erroring tests: $(wc -l < "$OUT/tests_failed.txt") (tests_failed.txt)"

# ----------------------------------------------------------------------------- 3. the benchmark

step benchmark "${GPU_CHECK_BENCH:-$((DEADLINE - $(date +%s) - 40))}" \
    "$PY" benchmarks/gpu_bench.py --device cuda --out "$OUT"

# ----------------------------------------------------------------------------- 4. the report

step report 30 "$PY" "$SCRIPTS/report.py" "$OUT"
rm -rf "$SCRIPTS"
log "== summary, $(($(date +%s) - START))s in all:$(printf '%b' "$SUMMARY")"
ls -l "$OUT" | tee -a "$LOG"
