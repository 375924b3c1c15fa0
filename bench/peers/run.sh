#!/usr/bin/env bash
# nnc against ONNX Runtime, OpenVINO and llama.cpp, one command (see bench/README.md, "Peers"):
#
#   bash bench/peers/run.sh [--quick] [--models resnet18,mobilenet_v2,bert_encoder,llama_decoder]
#                           [--threads 1,2] [--rounds N] [--refresh]
#
# Creates bench/peers/.venv from bench/peers/requirements.txt if it is missing (llama-cpp-python
# is built from source for this CPU: about 30 minutes on 2 cores), builds nnc in release mode, then
# runs bench/peers/peers.py, which prepares the models, checks that every engine agrees with nnc,
# times them interleaved and writes bench/peers/results.md and results.json.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv (llama-cpp-python compiles from source: about 30 minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --upgrade pip
    CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --no-binary llama-cpp-python \
        -r "$here/requirements.txt"
fi

(cd "$root" && cargo build --release -q -p nnc-compiler \
    && cargo build --release -q -p nnc-runtime --example machine_probe)
exec "$venv/bin/python" "$here/peers.py" "$@"
