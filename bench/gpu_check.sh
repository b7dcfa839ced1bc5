#!/usr/bin/env bash
# The one command to run when a GPU is lent (one H100/H200, no network, <= 8 minutes):
#     bash bench/gpu_check.sh              # the 8B-shaped GPU check; prints one summary table
#     bash bench/gpu_check.sh --cpu-smoke  # the same steps on the tiny shape on a CPU (checks the script)
#
# Python packages it needs beyond the machine's torch and transformers (the lent H200's image has
# peft, accelerate, pyarrow, pandas, numpy, pyyaml, tokenizers, safetensors, huggingface_hub):
#     bitsandbytes>=0.48 trl>=0.20 datasets>=3.0 (+ dill, multiprocess), and for the demo dataset path
#     jsonlines, matplotlib (present there), typer, rich (present there)
# Missing ones are named below with the command that downloads them as wheels (see
# /work/.library/device/README.md: carry .whl and install with --no-index --target).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
missing=$($PY - <<'PY'
import importlib.util
need = {"bitsandbytes": "bitsandbytes", "trl": "trl", "datasets": "datasets", "peft": "peft",
        "accelerate": "accelerate", "transformers": "transformers", "torch": "torch", "yaml": "pyyaml",
        "jsonlines": "jsonlines", "matplotlib": "matplotlib", "huggingface_hub": "huggingface_hub"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
    echo "missing Python packages: $missing"
    echo "download them where pip works (then carry .whl): python3 -m pip download --no-deps --only-binary=:all: \\"
    echo "    --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl $missing"
    exit 2
fi
if [ "${1:-}" != "--cpu-smoke" ]; then
    $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA GPU visible: use --cpu-smoke')" || exit 2
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
fi
exec $PY bench/gpu_check.py "$@"
