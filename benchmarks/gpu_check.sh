#!/usr/bin/env bash
# Everything a GPU check needs, in one run; each stage writes JSON under OUT_DIR, and a failed or timed-out stage
# does not stop the next (status.json says how each ended, so a short GPU lease still brings back what finished).
#
#   benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR: $1, else $OUT (the device tool's folder), else runs/gpu_check
#
#   env.json              the machine: GPU name and memory, torch and CUDA versions
#   tests.json            tests/engine/test_device.py (the CUDA == CPU step tests run where a GPU is present)
#   step.json             benchmarks/step.py --device DEVICE --quick --no-warm --json (CUDA: autotuned step, CUDA
#                         graphs + bf16, ensembles to K=64, max_memory_allocated, share of the measured matmul peak)
#   time_to_accuracy.json benchmarks/time_to_accuracy.py --recipe fast --seeds 0 --device DEVICE (data on the device)
#   vmap_trials.json      benchmarks/vmap_trials.py --device DEVICE: K = 1 and 16 study trials of one structure as
#                         K separate steps against one vmapped step, eager and compiled (trial-steps/s, speed-up,
#                         compile seconds); rewritten after each row, so a stage cut short keeps what finished
#   strings.json          (stage "strings", opt-in) metrics.json of hwr train --recipe strings --epochs 2 on DEVICE:
#                         the compiled CTC step's strings/s, compile seconds, CER (the pure CTC is what lets it compile
#                         on CUDA at all)
#   status.json           each stage's exit code and seconds, rewritten after every stage (a lease cut short keeps it)
#
# Environment: DEVICE (default cuda; cpu rehearses the script), SMOKE=1 (tiny sizes, eager steps: seconds, for the
# CPU test),
# STAGES (default "tests step tta vmap"; add "strings" when the lease has 2 more minutes), PYTHON (default .venv/bin/python, else python3), TF32=1 (step.py --tf32),
# TESTS_TIMEOUT / STEP_TIMEOUT / TTA_TIMEOUT / VMAP_TIMEOUT in seconds (defaults 140 / 170 / 110 / 120: 9 minutes
# in all, 20 s of kill grace each at most on top, inside one 10-minute device command).
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-${OUT:-runs/gpu_check}}
device=${DEVICE:-cuda}
stages=${STAGES:-tests step tta vmap}
if [[ -z ${PYTHON:-} ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$out"
declare -A rc secs

run_stage() {  # name timeout command...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" >&2
  local t0=$SECONDS
  timeout --signal=INT --kill-after=20 "$limit" "$@"
  rc[$name]=$?
  secs[$name]=$((SECONDS - t0))
  echo "== $name: exit ${rc[$name]} after ${secs[$name]} s" >&2
}

"$PYTHON" - "$out/env.json" "$device" <<'PY'
import json, subprocess, sys
import torch
env = {"device": sys.argv[2], "torch": torch.__version__, "cuda": torch.version.cuda,
       "cuda_available": torch.cuda.is_available()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}",
               bf16=torch.cuda.is_bf16_supported())
try:
    env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                        "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout
except (OSError, subprocess.SubprocessError):
    pass
json.dump(env, open(sys.argv[1], "w"), indent=2)
PY

if [[ ${SMOKE:-0} == 1 ]]; then
  tests_k=(-k "random_follows or resolve_device")
  # eager steps only: the rehearsal proves the script's stages and files; step.py's compiled rows and compiled
  # runs have their own tests (tests/test_benchmarks.py, tests/cli/test_cli.py)
  step_args=(--variants eager_module,hwr_eager --batch-sizes 8 --windows 2 --steps 2
             --config '{"channels": [4, 8], "hidden": 16}' --peak-gflops 100)
  tta_args=(--epochs 1 --limit-train 256 --limit-test 100 --no-compile)
  strings_args=(--epochs 1 --limit-train 128 --limit-test 50 --no-compile)  # two steps of the recipe's batch
  vmap_args=(--ks 1,2 --modes eager --batch-size 8 --windows 2 --steps 2 --config '{"channels": [4, 8], "hidden": 16}')
else
  tests_k=()
  step_args=()
  tta_args=()
  strings_args=(--epochs 2)
  vmap_args=(--ks 1,16 --windows 3)  # compiled: three cold builds (separate, K=1, K=16); each row saved as it ends
fi
[[ ${TF32:-0} == 1 ]] && step_args+=(--tf32)

write_status() {  # status.json from the stages run so far; sets status=1 where one failed
  status=0
  {
    echo "{"
    local first=1
    for done_stage in "${!rc[@]}"; do
      [[ $first == 1 ]] || echo ","
      first=0
      printf '  "%s": {"exit": %d, "seconds": %d}' "$done_stage" "${rc[$done_stage]}" "${secs[$done_stage]}"
      [[ ${rc[$done_stage]} == 0 ]] || status=1
    done
    echo
    echo "}"
  } > "$out/status.json"
}

for stage in $stages; do
  case $stage in
    tests)
      run_stage tests "${TESTS_TIMEOUT:-140}" "$PYTHON" -m pytest -q -p no:cacheprovider tests/engine/test_device.py \
        "${tests_k[@]}" --junitxml "$out/tests.xml"
      "$PYTHON" - "$out/tests.xml" "$out/tests.json" <<'PY'
import json, sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError) as e:
    json.dump({"error": str(e)}, open(sys.argv[2], "w"), indent=2)
    sys.exit(0)
cases = []
for case in root.iter("testcase"):
    kind = next((c.tag for c in case if c.tag in ("failure", "error", "skipped")), "passed")
    cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "outcome": kind,
                  "seconds": float(case.get("time", 0)),
                  "message": next((c.get("message", "")[:500] for c in case if c.tag != "system-out"), "")})
counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failure", "error", "skipped")}
json.dump({"counts": counts, "cases": cases}, open(sys.argv[2], "w"), indent=2)
PY
      ;;
    step)
      run_stage step "${STEP_TIMEOUT:-170}" "$PYTHON" benchmarks/step.py --device "$device" --quick --no-warm \
        --json "$out/step.json" "${step_args[@]}"
      ;;
    tta)
      run_stage tta "${TTA_TIMEOUT:-110}" "$PYTHON" benchmarks/time_to_accuracy.py --recipe fast --seeds 0 \
        --device "$device" --fresh --out "$out/runs" --json "$out/time_to_accuracy.json" "${tta_args[@]}"
      ;;
    vmap)
      run_stage vmap "${VMAP_TIMEOUT:-120}" "$PYTHON" benchmarks/vmap_trials.py --device "$device" \
        --json "$out/vmap_trials.json" "${vmap_args[@]}"
      ;;
    strings)
      rm -rf "$out/strings_run"
      run_stage strings "${STRINGS_TIMEOUT:-150}" "$PYTHON" -m hwr.cli train --recipe strings --device "$device" \
        --out "$out/strings_run" "${strings_args[@]}"
      cp "$out/strings_run/metrics.json" "$out/strings.json" 2>/dev/null || true
      ;;
    *)
      echo "unknown stage $stage (use tests, step, tta, vmap, strings)" >&2
      rc[$stage]=2
      secs[$stage]=0
      ;;
  esac
  write_status
done
write_status

cat "$out/status.json" >&2
exit $status
