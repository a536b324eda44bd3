#!/usr/bin/env bash
# The CUDA and TensorRT checks of issue 17, prepared here and run in one short session on a lent GPU machine
# (an H100/H200 with its own Python 3.12 and CUDA torch, no network): docs/runtimes.md, "On a GPU".
#
#   here, with pip's registry:       bench/gpu_session.sh prepare
#   device call 1, carry .gpu/av:    bash bench/gpu_session.sh stage
#   device call 2, AT ONCE after it, carry .gpu/wheels and .gpu/assets:
#                                    bash bench/gpu_session.sh run            (about 8 minutes at most)
#
# Why two calls: what travels to the device is at most 64 MiB, the working tree included (~23 MiB). PyAV's
# wheel alone is 34 MiB (it bundles FFmpeg), the other packages the device lacks 18 MiB, the weights and a photo
# 4 MiB: too much for one call. 'stage' installs PyAV into .gpu/site, an ignored folder the device keeps
# between calls while the machine stays warm (30 s after a call); 'run' installs the rest beside it.
# A CUDA build of torch cannot travel at all (its wheel and NVIDIA libraries are gigabytes): the device's own
# python3 and torch are used (2.11.0+cu130 when last seen), and the log records their versions. TensorRT's wheels
# are gigabytes too: its tests and bench column run only where the device has it, else they skip, saying why.
#
# What 'run' leaves under $OUT (each step's exit status is in summary.md; a failing step does not stop the rest):
#   summary.md   versions, GPU, each step's status and its pytest summary line
#   session.log  everything the steps printed
#   noise_device.md/.json, runtimes-gpu.md/.json   the two benches' tables
#   junit.tar.gz the pytest steps' JUnit XML
set -uo pipefail

cd "$(dirname "$0")/.."
GPU_DIR=.gpu
MIB=$((1024 * 1024))
LIMIT_MIB=64

# the packages the device's image lacks (or has too old for the checked-in stubs: protobuf, grpcio), pinned to
# the versions this checkout's .venv runs its tests with
AV_PACKAGES=(av)
PACKAGES=(cryptography cffi pycparser pydantic pydantic_core pydantic-settings typing-inspection annotated-types
          python-dotenv grpcio grpcio-health-checking grpcio-reflection protobuf aiortc aioice pyee pylibsrtp
          google-crc32c dnspython ifaddr pyOpenSSL pytest-asyncio typing_extensions)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
WEIGHTS_IN_SHARED=assets/faceboxes/FaceBoxesProd.pth
PHOTO_IN_SHARED=data/faces/dlib/images/2008_001322.jpg  # tests/test_runtimes.py's second photo

travelling_bytes() {  # the working tree that travels: tracked and untracked files git does not ignore
    { git ls-files; git ls-files --others --exclude-standard; } | sort -u \
        | while IFS= read -r f; do [ -f "$f" ] && stat -c %s "$f"; done | awk '{s += $1} END {print s + 0}'
}

folder_bytes() { du -sb "$@" | awk '{s += $1} END {print s + 0}'; }

prepare() {
    local python=${PYTHON:-.venv/bin/python} shared=${FROSTED_SHARED:-../shared}
    local exclude
    exclude="$(git rev-parse --git-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$GPU_DIR/" "$exclude" 2>/dev/null || echo "/$GPU_DIR/" >>"$exclude"
    rm -rf "$GPU_DIR/av" "$GPU_DIR/wheels" "$GPU_DIR/assets"
    mkdir -p "$GPU_DIR/av" "$GPU_DIR/wheels" "$GPU_DIR/assets"
    local platform_flags=() p
    for p in "${PLATFORMS[@]}"; do platform_flags+=(--platform "$p"); done
    pins() { "$python" -c 'import importlib.metadata as m, sys; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"; }
    local download=("$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12
                    --implementation cp "${platform_flags[@]}")
    # shellcheck disable=SC2046  # one pin per word
    "${download[@]}" -d "$GPU_DIR/av" $(pins "${AV_PACKAGES[@]}") || return 1
    # shellcheck disable=SC2046
    "${download[@]}" -d "$GPU_DIR/wheels" $(pins "${PACKAGES[@]}") || return 1
    for p in "$WEIGHTS_IN_SHARED" "$PHOTO_IN_SHARED"; do
        [ -f "$shared/$p" ] || { echo "prepare: $shared/$p not found (set FROSTED_SHARED)" >&2; return 1; }
        mkdir -p "$GPU_DIR/assets/$(dirname "$p")"
        cp "$shared/$p" "$GPU_DIR/assets/$p"
    done
    local tree first second
    tree=$(travelling_bytes)
    first=$((tree + $(folder_bytes "$GPU_DIR/av")))
    second=$((tree + $(folder_bytes "$GPU_DIR/wheels" "$GPU_DIR/assets")))
    echo "travels: call 1 $((first / MIB)) MiB, call 2 $((second / MIB)) MiB (limit $LIMIT_MIB MiB each;" \
         "the working tree is $((tree / MIB)) MiB of it)"
    if [ "$first" -gt $((LIMIT_MIB * MIB)) ] || [ "$second" -gt $((LIMIT_MIB * MIB)) ]; then
        echo "prepare: over the device's $LIMIT_MIB MiB: carry less" >&2
        return 1
    fi
    cat <<EOF
Ready. In a session whose task has a GPU (the device tool's status: can_start_another true), call run twice,
the second at once after the first returns (the machine stays warm 30 s):
  run(command="bash bench/gpu_session.sh stage", carry=[".gpu/av"], timeout_s=120)
  run(command="bash bench/gpu_session.sh run", carry=[".gpu/wheels", ".gpu/assets"], timeout_s=560)
then give_back, and read summary.md and session.log.
EOF
}

install_into_site() {  # wheels (file arguments) into .gpu/site, for the device's python3
    # REHEARSE=1: a dry run of 'run' on a machine without a GPU (the packages already installed, no wheels)
    [ -n "${REHEARSE:-}" ] && return 0
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$GPU_DIR/site" "$@"
}

stage() {
    install_into_site "$GPU_DIR"/av/*.whl || return 1
    mkdir -p "${OUT:-/tmp/out}"
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 -c 'import sys, torch; print(sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())'
        PYTHONPATH="$GPU_DIR/site" python3 -c 'import av; print("av", av.__version__)'
    } 2>&1 | tee "${OUT:-/tmp/out}/stage.txt"
}

step() {  # step NAME SECONDS COMMAND...: run it under a deadline and log its exit status; never stops the session
    local name=$1 seconds=$2 started rc
    shift 2
    started=$(date +%s)
    echo "=== $name (at most ${seconds} s): $*"
    timeout --kill-after=10 "$seconds" "$@"
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - started)) s"
}

run() {
    local out=${OUT:-/tmp/out} work=/tmp/gpu-session
    if [ -z "${REHEARSE:-}" ] && [ ! -d "$GPU_DIR/site/av" ]; then
        echo "run: no $GPU_DIR/site/av here: the machine went cold after 'stage' (or it was not called); call" \
             "'bash bench/gpu_session.sh stage' with carry .gpu/av, then this at once" >&2
        return 2
    fi
    install_into_site "$GPU_DIR"/wheels/*.whl || return 1
    rm -rf "$work" && mkdir -p "$work/junit" "$work/bench" "$out"
    export PYTHONPATH="$PWD/$GPU_DIR/site:$PWD" PYTHONUNBUFFERED=1 FROSTED_SHARED="$PWD/$GPU_DIR/assets"
    export FROSTED_WEIGHTS="$FROSTED_SHARED/$WEIGHTS_IN_SHARED" FROSTED_GRAPH_CACHE="$work/graphs"
    local pytest=(python3 -m pytest --timeout 300 -q -rA -p no:cacheprovider)
    local batches=1,8,32,128 seconds=0.2
    [ -n "${REHEARSE:-}" ] && batches=1 seconds=0.05  # a CPU: only that the steps run and the files come out
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "sees GPU:", torch.cuda.is_available())'
        python3 -m pip list 2>/dev/null | grep -iE '^(torch|triton|onnxruntime|onnxruntime-gpu|onnx|onnxscript|tensorrt|numpy|opencv-python-headless|grpcio|protobuf) '
        # the device sampler and its statistics on the GPU; the CPU cases run too (seconds on 16 cores)
        step noise-device-tests 90 "${pytest[@]}" tests/test_noise_device.py --junitxml="$work/junit/noise_device.xml"
        # CUDA head/tail parity (fp32 <= 1e-4, float16 to its tolerance), noise on the device, ORT's CUDA EP, TensorRT
        step runtime-tests 90 "${pytest[@]}" tests/test_runtimes.py -k "cuda or tensorrt or float16" \
            --junitxml="$work/junit/runtimes.xml"
        # the live agent and tail over real gRPC, head + noise and tail on the GPU
        step edge-e2e-cuda 60 "${pytest[@]}" tests/test_edge.py -k "torch-cuda" --junitxml="$work/junit/edge.xml"
        step noise-bench 60 python3 bench/noise_device.py --iterations 30 --out "$work/bench"
        # the GPU rows: torch CPU as the reference, torch on CUDA at fp32 and fp16, ONNX Runtime's CUDA provider
        # and TensorRT where installed (else a skipped column), batches up to 128 for frames/s. It writes its
        # tables only at the end: the first CUDA worker compiles the ChaCha20 sampler once per batch shape
        # (inductor's cache serves the next); if it runs out of time, rerun it alone with --batches 1,32
        step runtimes-bench 180 python3 bench/runtimes.py --runtimes torch,torch-cuda,torch-cuda-fp16,onnxruntime-cuda,tensorrt \
            --batches "$batches" --rounds 1 --seconds "$seconds" --threads "$(nproc)" --out "$work/bench"
    } 2>&1 | tee "$out/session.log"
    {
        echo "# GPU session $(date -u +%FT%TZ)"
        echo
        head -n 3 "$out/session.log" | sed 's/^/    /'
        echo
        echo "| step | exit | seconds | pytest summary |"
        echo "|---|---|---|---|"
        local line name rc seconds summary
        while IFS= read -r line; do  # from the log: the steps ran in the piped group's subshell
            name=$(sed -E 's/^=== ([a-z0-9-]+): exit ([0-9]+) after ([0-9]+) s$/\1/' <<<"$line")
            rc=$(sed -E 's/^=== [a-z0-9-]+: exit ([0-9]+) after.*/\1/' <<<"$line")
            seconds=$(sed -E 's/.* after ([0-9]+) s$/\1/' <<<"$line")
            summary=$(awk -v n="$name" '$0 ~ "^=== "n" \\(" {on = 1; next} on && /^=== / {on = 0}
                                        on && /(passed|failed|skipped|error)/ && / in [0-9.]+s/ {s = $0} END {print s}' \
                      "$out/session.log" | tr -d '=' | sed 's/^ *//')
            echo "| $name | $rc | $seconds | $summary |"
        done < <(grep -E '^=== [a-z0-9-]+: exit [0-9]+ after [0-9]+ s$' "$out/session.log")
    } >"$out/summary.md"
    cp "$work"/bench/noise_device.md "$work"/bench/noise_device.json "$out"/ 2>/dev/null
    local table
    for table in "$work"/bench/runtimes*.md "$work"/bench/runtimes*.json; do
        [ -f "$table" ] && cp "$table" "$out/runtimes-gpu.${table##*.}"
    done
    tar -czf "$out/junit.tar.gz" -C "$work" junit
    cat "$out/summary.md"
}

case "${1:-}" in
    prepare) prepare ;;
    stage) stage ;;
    run) run ;;
    *) echo "usage: bench/gpu_session.sh prepare|stage|run (see its header)" >&2; exit 2 ;;
esac
