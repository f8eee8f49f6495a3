#!/usr/bin/env bash
# The one prepared GPU-machine check: versions, the CUDA tests, scripts/benchmarks/bench_gpu.py and (if present)
# scripts/benchmarks/bench_neighbours.py, each step timed, logged and summarised, inside a total time cap.
#
#   bash scripts/tools/device_wheels.sh            # here, once per checkout: wheels the GPU image lacks (ASE)
#   bash scripts/tools/device_check.sh             # on the GPU machine, from the repository root (carry .whl)
#   bash scripts/tools/device_check.sh --dry-run   # the same steps on a CPU: TRITON_INTERPRET=1, tiny sizes
#
# Output folder: $OUT (default ./device_out): log.txt (every command's output), summary.md (each step
# ok/failed/timeout/missing/skipped with its time, then bench_gpu.md), bench_gpu.json, bench_gpu.md,
# bench_neighbours.json, versions.txt, nvidia-smi.txt.  Always exits 0: read summary.md.
# Nothing is downloaded: pip runs with --no-index (editable install of this tree only, and only if
# torchace cannot be imported); missing torch / triton / ase are reported.
#
# Environment overrides:
#   PYTHON                        the interpreter (default: python, else python3)
#   DEVICE_CHECK_TOTAL_S          total cap in seconds (default 470)
#   DEVICE_CHECK_TESTS            test files for the pytest step (default tests/model/test_triton.py tests/structures/test_cell_list.py)
#   DEVICE_CHECK_SKIP             space/comma-separated step names to skip (nvidia-smi versions install pytest
#                                 bench_gpu bench_neighbours)
#   DEVICE_CHECK_PYTEST_S, DEVICE_CHECK_BENCH_S, DEVICE_CHECK_NEIGHBOURS_S   per-step timeouts
#   BENCH_BACKEND                 --backend of bench_gpu.py (default triton,triton-lanes,triton-pairs,analytic)
#   BENCH_ARGS                    extra arguments of bench_gpu.py
set -u

DRY=0
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY=1 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
    esac
done

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO" || exit 0
OUT="${OUT:-./device_out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
LOG="$OUT/log.txt"
STEPS="$OUT/.steps.tsv"
: > "$LOG"
: > "$STEPS"
if [ -z "${PYTHON:-}" ]; then
    # the first interpreter that has torch (on the lent H200 image that is python3)
    PYTHON=python3
    for cand in python3 python; do
        if command -v "$cand" >/dev/null 2>&1 && "$cand" -c "import torch" >/dev/null 2>&1; then PYTHON=$cand; break; fi
    done
fi
TOTAL_S="${DEVICE_CHECK_TOTAL_S:-470}"
T0=$(date +%s)
SKIP=" $(echo "${DEVICE_CHECK_SKIP:-}" | tr ',' ' ') "
TESTS="${DEVICE_CHECK_TESTS:-tests/model/test_triton.py tests/structures/test_cell_list.py}"

if [ "$DRY" = 1 ]; then
    export TRITON_INTERPRET=1
    export CUDA_VISIBLE_DEVICES=""
    DEV=cpu
    PYTEST_S="${DEVICE_CHECK_PYTEST_S:-120}"
    BENCH_S="${DEVICE_CHECK_BENCH_S:-120}"
    NEIGH_S="${DEVICE_CHECK_NEIGHBOURS_S:-60}"
else
    DEV=cuda
    PYTEST_S="${DEVICE_CHECK_PYTEST_S:-120}"
    BENCH_S="${DEVICE_CHECK_BENCH_S:-250}"
    NEIGH_S="${DEVICE_CHECK_NEIGHBOURS_S:-45}"
fi
export PYTHONUNBUFFERED=1
export PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1

log() { echo "$*" | tee -a "$LOG"; }
elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( TOTAL_S - $(elapsed) )); }
record() {  # name status seconds note
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$STEPS"
    log "--- $1: $2 (${3} s) $4"
}

# run_step NAME TIMEOUT_S [RESERVE_S] -- COMMAND...   (RESERVE_S: seconds kept for the steps after it)
run_step() {
    local name="$1" tmax="$2" reserve=0
    STEP_RC=skipped
    shift 2
    if [ "$1" != "--" ]; then reserve="$1"; shift; fi
    shift
    case "$SKIP" in *" $name "*) record "$name" skipped 0 "DEVICE_CHECK_SKIP"; return 0 ;; esac
    local avail=$(( $(left) - reserve ))
    [ "$tmax" -gt "$avail" ] && tmax="$avail"
    if [ "$tmax" -lt 5 ]; then record "$name" skipped 0 "total time cap ${TOTAL_S} s reached"; return 0; fi
    log ""
    log "=== $name (timeout ${tmax} s, $(elapsed) s elapsed): $*"
    local s=$(date +%s)
    timeout --signal=TERM --kill-after=15 "$tmax" "$@" >> "$LOG" 2>&1
    local rc=$?
    local dt=$(( $(date +%s) - s ))
    STEP_RC=$rc
    case $rc in
        0) record "$name" ok "$dt" "" ;;
        124|137) record "$name" timeout "$dt" "killed after ${tmax} s" ;;
        127) record "$name" missing "$dt" "command not found" ;;
        *) record "$name" failed "$dt" "exit code $rc" ;;
    esac
    return 0
}

log "device_check.sh $( [ "$DRY" = 1 ] && echo '--dry-run ')in $REPO, output $OUT, $(date -u +%FT%TZ), cap ${TOTAL_S} s"

# 1. the GPU
if [ "$DRY" = 1 ] && ! command -v nvidia-smi >/dev/null 2>&1; then
    record nvidia-smi missing 0 "no nvidia-smi (dry run on a CPU)"
else
    run_step nvidia-smi 30 -- bash -c 'nvidia-smi 2>&1 | tee "$0"; exit ${PIPESTATUS[0]}' "$OUT/nvidia-smi.txt"
fi

# 2. versions (torch, CUDA, triton, ...); says clearly what is missing
VERSIONS_PY='
import importlib, os, platform, sys
print("python", platform.python_version(), sys.executable)
missing = []
for mod in ("numpy", "torch", "triton", "ase", "vesin", "scipy", "pytest", "torchace"):
    try:
        m = importlib.import_module(mod)
        print(mod, getattr(m, "__version__", "?"), getattr(m, "__file__", ""))
    except Exception as exc:
        print(mod, "NOT IMPORTABLE:", type(exc).__name__, exc)
        if mod in ("torch", "triton", "ase", "numpy"):
            missing.append(mod)
try:
    import torch
    print("torch.version.cuda", torch.version.cuda, "| cuda available", torch.cuda.is_available(),
          "| devices", torch.cuda.device_count())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        print("gpu", torch.cuda.get_device_name(0), "capability", f"{p.major}.{p.minor}",
              "memory GiB", round(p.total_memory / 2**30, 1))
except Exception as exc:
    print("torch/cuda query failed:", exc)
print("TRITON_INTERPRET", os.environ.get("TRITON_INTERPRET"))
if missing:
    print("MISSING (nothing is downloaded here):", " ".join(missing))
    sys.exit(3)
'
# wheels carried in .whl (scripts/tools/device_wheels.sh: ASE is not in the GPU image) go to /tmp/site, no network
if [ "$DRY" -eq 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
    run_step wheels 120 -- "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
printf '%s\n' "$VERSIONS_PY" > "$OUT/versions.py"
run_step versions 90 -- bash -c 'cd /tmp && "$0" "$1" 2>&1 | tee "$2"; exit ${PIPESTATUS[0]}' \
    "$PYTHON" "$OUT/versions.py" "$OUT/versions.txt"
if grep -q "^MISSING" "$OUT/versions.txt" 2>/dev/null; then
    log "!!! $(grep '^MISSING' "$OUT/versions.txt")"
fi

# 3. torchace importable from outside the tree? else an editable install without network
if (cd /tmp && "$PYTHON" -c "import torchace" >/dev/null 2>&1); then
    record install ok 0 "torchace already importable"
else
    run_step install 120 -- "$PYTHON" -m pip install --no-index -e . --no-deps --no-build-isolation
fi
# this tree wins over any other installed copy, whatever pip did
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

# 4. the CUDA tests (dry run: on the CPU under the Triton interpreter)
present="" absent=""
for t in $TESTS; do
    if [ -f "$t" ]; then present="$present $t"; else absent="$absent $t"; fi
done
[ -n "$absent" ] && log "test files missing:$absent"
if [ -z "$present" ]; then
    record pytest missing 0 "no test files present (missing:$absent)"
else
    run_step pytest "$PYTEST_S" 60 -- "$PYTHON" -m pytest -q -x -p no:cacheprovider $present
    case "$STEP_RC" in
        5) sed -i '$ d' "$STEPS"; record pytest "no tests" 0 "pytest collected nothing" ;;
    esac
    if [ -n "$absent" ]; then
        last=$(tail -n 1 "$STEPS"); sed -i '$ d' "$STEPS"
        printf '%s (missing:%s)\n' "$last" "$absent" >> "$STEPS"
    fi
fi

# 5. the GPU benchmarks (their JSON is rewritten after every measurement: a timeout keeps what ran)
BENCH_BACKEND="${BENCH_BACKEND:-triton,triton-lanes,triton-pairs,analytic}"
reserve=$(( NEIGH_S + 5 ))
[ -f scripts/benchmarks/bench_neighbours.py ] || reserve=0
bt=$(( $(left) - reserve ))
[ "$bt" -gt "$BENCH_S" ] && bt="$BENCH_S"
budget=$(( bt - 45 ))
[ "$DRY" = 1 ] && budget=$(( bt - 10 ))
[ "$budget" -lt 10 ] && budget=10
if [ "$DRY" = 1 ]; then
    run_step bench_gpu "$bt" "$reserve" -- "$PYTHON" scripts/benchmarks/bench_gpu.py --device cpu --dry-run \
        --backend "$BENCH_BACKEND" --budget-s "$budget" --json "$OUT/bench_gpu.json" \
        --markdown "$OUT/bench_gpu.md" ${BENCH_ARGS:-}
else
    run_step bench_gpu "$bt" "$reserve" -- "$PYTHON" scripts/benchmarks/bench_gpu.py --device cuda \
        --backend "$BENCH_BACKEND" --budget-s "$budget" --json "$OUT/bench_gpu.json" \
        --markdown "$OUT/bench_gpu.md" ${BENCH_ARGS:-}
fi

# 6. neighbour lists (another engineer's script; optional)
if [ -f scripts/benchmarks/bench_neighbours.py ]; then
    if [ "$DRY" = 1 ]; then
        run_step bench_neighbours "$NEIGH_S" -- "$PYTHON" scripts/benchmarks/bench_neighbours.py --device cpu --dry-run \
            --json "$OUT/bench_neighbours.json"
    else
        run_step bench_neighbours "$NEIGH_S" -- "$PYTHON" scripts/benchmarks/bench_neighbours.py --device cuda \
            --json "$OUT/bench_neighbours.json"
    fi
else
    record bench_neighbours missing 0 "scripts/benchmarks/bench_neighbours.py not present"
fi

# summary
{
    echo "# device_check $( [ "$DRY" = 1 ] && echo '(dry run, CPU, TRITON_INTERPRET=1)' )"
    echo
    echo "$(date -u +%FT%TZ); total $(elapsed) s of the ${TOTAL_S} s cap; full output in log.txt"
    echo
    echo "| step | status | seconds | note |"
    echo "|---|---|---|---|"
    while IFS=$'\t' read -r name status secs note; do
        echo "| $name | $status | $secs | $note |"
    done < "$STEPS"
    echo
    if [ -f "$OUT/versions.txt" ]; then
        echo "## versions"; echo; echo '```'; cat "$OUT/versions.txt"; echo '```'; echo
    fi
    if [ -f "$OUT/bench_gpu.json" ]; then
        "$PYTHON" - "$OUT/bench_gpu.json" <<'PYEOF' 2>/dev/null || echo "(bench_gpu.json unreadable)"
import json, sys
d = json.load(open(sys.argv[1]))
ok = sum(r.get("status") == "ok" for r in d.get("energy_forces", []))
print(f"bench_gpu.json: {ok} E+F cases ok, {len(d.get('errors', []))} errors, {len(d.get('skipped', []))} skipped, "
      f"finished {d.get('finished')}, budget {d.get('budget')}" + (f"; {d['skipped_all']}" if d.get("skipped_all") else ""))
PYEOF
        echo
    fi
    if [ -f "$OUT/bench_gpu.md" ]; then
        sed 's/^#/##/' "$OUT/bench_gpu.md"
    else
        echo "(no bench_gpu.md)"
    fi
} > "$OUT/summary.md"
rm -f "$STEPS" "$OUT/versions.py"
echo "summary: $OUT/summary.md"
exit 0
