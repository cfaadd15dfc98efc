#!/usr/bin/env bash
# GPU smoke test of the vllm backend: a real `vllm serve` with live LoRA, one `sia run`.
#
# Needs a CUDA machine with `pip install -e '.[gpu]'` (vLLM >= 0.11). It cannot run on the
# CPU-only CI: the offline tests use a fake of vLLM's HTTP API instead
# (tests/models/test_models_vllm_backend.py).
#
#   bench/gpu_smoke.sh                    # SmolLM2-135M (fetched into SIA's cache), mode w
#   MODEL_DIR=/models/qwen MODE=w+h ITERATIONS=2 bench/gpu_smoke.sh
#
# Steps: start `vllm serve MODEL_DIR --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING
# and processed logprobs; wait for /health; run `sia run --backend vllm --endpoint ...`
# (training, when the mode allows it, uses transformers on the same directory and the
# adapters are loaded into the server by path); then check that the ledger holds calls
# with token ids and one logprob per token. The server is stopped on exit, whatever happens.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
SIA="${SIA:-$ROOT/.venv/bin/sia}"
PORT="${PORT:-8765}"
MODE="${MODE:-w}"
ITERATIONS="${ITERATIONS:-1}"
WORK="$(mktemp -d -t sia-gpu-smoke-XXXX)"
LOG="$WORK/vllm.log"

if [[ -z "${MODEL_DIR:-}" ]]; then
  "$SIA" models fetch smollm2-135m-instruct >/dev/null
  MODEL_DIR="$("$PY" -c 'from sia.models import model_path; print(model_path("smollm2-135m-instruct"))')"
fi

VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve "$MODEL_DIR" \
  --host 127.0.0.1 --port "$PORT" \
  --enable-lora --max-lora-rank 16 --max-loras 4 \
  --gpu-memory-utilization "${GPU_MEMORY_UTILIZATION:-0.5}" \
  --logprobs-mode processed_logprobs >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null || true' EXIT

echo "waiting for vllm serve (pid $SERVER, log $LOG)"
for _ in $(seq 1 600); do
  if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$SERVER" 2>/dev/null; then tail -n 20 "$LOG"; echo "vllm serve died"; exit 1; fi
  sleep 1
done
curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { echo "vllm serve never became healthy"; exit 1; }

"$SIA" --workspace "$WORK/ws" run --backend vllm --endpoint "http://127.0.0.1:$PORT/v1" \
  --policy "$MODEL_DIR" --mode "$MODE" --iterations "$ITERATIONS" --batch-size 4 \
  --run-id gpu-smoke --json --quiet | tee "$WORK/summary.json"

"$PY" - "$WORK/ws" <<'CHECK'
import sys
from collections import Counter

from sia.workspace import Workspace

with Workspace.open(sys.argv[1]).reader() as recorder:
    calls = recorder.read_calls("gpu-smoke")
assert calls, "the ledger holds no calls"
assert all(c.completion_ids and len(c.logprobs) == len(c.completion_ids) for c in calls), (
    "a call lacks token ids or per-token logprobs"
)
print(f"ok: {len(calls)} calls, by adapter: {dict(Counter(c.adapter_tag for c in calls))}")
CHECK
