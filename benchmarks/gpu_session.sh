#!/usr/bin/env bash
# One device call that measures what issue 14 left for a GPU: the compiled decode step with a
# static KV cache (compile_rollouts) and finished rows leaving the batch, against the merged lean
# loop and TRL, on random weights of the Qwen2.5-0.5B shapes. About 6-7 minutes on an H200
# (an estimate from its parts; --budget-s stops starting new processes after 400 s).
#
# Here, once (the device has no bitsandbytes or TRL, and no network):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl bitsandbytes==0.50.2 trl==1.16.0
# Then the device tool's run with carry [".whl"] and command "bash benchmarks/gpu_session.sh".
# Results: $OUT/gpu-session.json and $OUT/gpu-session.log; copy them to benchmarks/results/.
set -o pipefail
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu-session.log"
python3 -c "import torch, transformers, peft, bitsandbytes, trl; print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__, bitsandbytes.__version__, trl.__version__)" 2>&1 | tee -a "$OUT/gpu-session.log"
python3 benchmarks/gpu.py --runs "0.5b:256:merged,compiled,trl" --steps 3 --rollouts 8 --rollout-roads extras \
    --random-weights --budget-s 400 --json "$OUT/gpu-session.json" 2>&1 | tee -a "$OUT/gpu-session.log"
