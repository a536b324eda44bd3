#!/usr/bin/env bash
# The CUDA and TensorRT checks of issue 17, prepared here and run in one short session on a lent GPU machine
# (an H100/H200 with its own Python 3.12 and CUDA torch, no network): docs/runtimes.md, "On a GPU".
#
#   here, with pip's registry:   bench/gpu_session.sh prepare     (prints the device calls, with their carry)
#   device calls, back to back:  bash bench/gpu_session.sh stage  (once per part but the last)
#                                bash bench/gpu_session.sh run SHA256  (the last part; about 8 minutes at most)
#
# Why parts: what travels to the device in one call is at most 64 MiB, the working tree included (~30 MiB). What
# the device lacks is more than the rest: PyAV's wheel (34 MiB, it bundles FFmpeg), the other packages (18 MiB),
# the weights, a photo and the held-out accuracy sets (12 MiB). 'prepare' packs them into one tar and splits it
# into parts that each fit beside the tree; 'stage' keeps a part in .gpu/received, an ignored folder the device
# keeps between calls while the machine stays warm (30 s after a call); 'run' adds the last part, checks the
# whole tar's sha256, unpacks it and installs the wheels into .gpu/site.
# A CUDA build of torch cannot travel at all (its wheel and NVIDIA libraries are gigabytes): the device's own
# python3 and torch are used (2.11.0+cu130 when last seen), and the log records their versions. TensorRT's wheels
# are gigabytes too: its tests and bench column run only where the device has it, else they skip, saying why.
#
# What 'run' leaves under $OUT (each step's exit status is in summary.md; a failing step does not stop the rest):
#   summary.md   versions, GPU, each step's status and its pytest summary line
#   session.log  everything the steps printed
#   noise_device.md/.json, runtimes-gpu.md/.json, float16_accuracy.md/.json   the benches' tables
#   junit.tar.gz the pytest steps' JUnit XML
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
GPU_DIR=.gpu
MIB=$((1024 * 1024))
LIMIT_MIB=64
MARGIN_MIB=2  # the tree may grow a little between 'prepare' and the calls

# the packages the device's image lacks (or has too old for the checked-in stubs: protobuf, grpcio), pinned to
# the versions this checkout's .venv runs its tests with
PACKAGES=(av cryptography cffi pycparser pydantic pydantic_core pydantic-settings typing-inspection annotated-types
          python-dotenv grpcio grpcio-health-checking grpcio-reflection protobuf aiortc aioice pyee pylibsrtp
          google-crc32c dnspython ifaddr pyOpenSSL pytest-asyncio typing_extensions)
PLATFORMS=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_26_x86_64 manylinux_2_24_x86_64
           manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)
WEIGHTS_IN_SHARED=assets/faceboxes/FaceBoxesProd.pth
PHOTO_IN_SHARED=data/faces/dlib/images/2008_001322.jpg  # tests/test_runtimes.py's second photo
# tests/test_int8.py's calibration folder (its CALIBRATION)
CALIBRATION_IN_SHARED=(data/faces/dlib/images/2007_007763.jpg data/faces/dlib/images/2008_001009.jpg
                       data/faces/dlib/images/2008_002079.jpg data/faces/dlib/images/2008_002470.jpg)

travelling_bytes() {  # the working tree that travels: tracked and untracked files git does not ignore
    { git ls-files; git ls-files --others --exclude-standard; } | sort -u \
        | while IFS= read -r f; do [ -f "$f" ] && stat -c %s "$f"; done | awk '{s += $1} END {print s + 0}'
}

prepare() {
    local python=${PYTHON:-.venv/bin/python} shared=${FROSTED_SHARED:-../shared}
    local exclude payload="$GPU_DIR/payload"
    exclude="$(git rev-parse --git-dir)/info/exclude"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$GPU_DIR/" "$exclude" 2>/dev/null || echo "/$GPU_DIR/" >>"$exclude"
    rm -rf "$GPU_DIR" && mkdir -p "$payload/wheels" "$payload/assets"
    local platform_flags=() p
    for p in "${PLATFORMS[@]}"; do platform_flags+=(--platform "$p"); done
    pins() { "$python" -c 'import importlib.metadata as m, sys; print(*(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "$@"; }
    # shellcheck disable=SC2046  # one pin per word
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platform_flags[@]}" -d "$payload/wheels" $(pins "${PACKAGES[@]}") || return 1
    for p in "$WEIGHTS_IN_SHARED" "$PHOTO_IN_SHARED" "${CALIBRATION_IN_SHARED[@]}"; do
        [ -f "$shared/$p" ] || { echo "prepare: $shared/$p not found (set FROSTED_SHARED)" >&2; return 1; }
        mkdir -p "$payload/assets/$(dirname "$p")"
        cp "$shared/$p" "$payload/assets/$p"
    done
    # the held-out accuracy sets (bench/precision_accuracy.py): the images no profile saw, with labels that list only
    # them (the AP pooled over them is the same; a profile's "seen" list then removes nothing)
    FROSTED_WEIGHTS="$shared/$WEIGHTS_IN_SHARED" "$python" - "$shared" "$payload/assets" <<'PY' || return 1
import json, shutil, sys
from pathlib import Path
from facesplit.detector import load_detector
from facesplit.noise import DEFAULT_PROFILE
from facesplit.noise.shipped import load_profile_for
from facesplit.preprocess import InputSize
from privacy_attack.tradeoff import held_out_sets
shared, assets = Path(sys.argv[1]), Path(sys.argv[2])
profile = load_profile_for(load_detector(None, InputSize(1024, 1024), split="inception3"), DEFAULT_PROFILE)
for name, held_out in held_out_sets(shared, {DEFAULT_PROFILE: profile}).items():
    folder = assets / "data/faces" / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    keep = {Path(image.path).name for image in held_out.images}
    labels = json.loads((shared / "data/faces" / name / "labels.json").read_text())
    images = [image for image in labels["images"] if Path(image["file_name"]).name in keep]
    ids = {image["id"] for image in images}
    labels.update(images=images, annotations=[a for a in labels["annotations"] if a["image_id"] in ids])
    (folder / "labels.json").write_text(json.dumps(labels))
    for image in images:
        shutil.copy(shared / "data/faces" / name / "images" / image["file_name"], folder / "images")
PY
    local tree room total parts sha
    tree=$(travelling_bytes)
    room=$((LIMIT_MIB * MIB - tree - MARGIN_MIB * MIB))
    [ "$room" -gt $((4 * MIB)) ] || { echo "prepare: the working tree ($((tree / MIB)) MiB) leaves no room" >&2; return 1; }
    tar -cf "$GPU_DIR/payload.tar" -C "$payload" wheels assets || return 1  # wheels are zips: no gain compressing
    total=$(stat -c %s "$GPU_DIR/payload.tar")
    parts=$(((total + room - 1) / room))
    split -n "$parts" -d -a 1 "$GPU_DIR/payload.tar" "$GPU_DIR/part-" || return 1
    sha=$(sha256sum "$GPU_DIR/payload.tar" | cut -d' ' -f1)
    rm -rf "$payload" "$GPU_DIR/payload.tar"
    echo "travels: $parts parts of $((total / parts / MIB)) MiB beside the $((tree / MIB)) MiB tree (limit $LIMIT_MIB MiB a call)"
    echo "Ready. In a session whose task has a GPU (the device tool's status: can_start_another true), make these"
    echo "calls back to back, each at once after the one before returns (the machine stays warm 30 s):"
    local k last=$((parts - 1))
    for ((k = 0; k < last; k++)); do
        echo "  run(command=\"bash bench/gpu_session.sh stage\", carry=[\"$GPU_DIR/part-$k\"], timeout_s=60)"
    done
    echo "  run(command=\"bash bench/gpu_session.sh run $sha\", carry=[\"$GPU_DIR/part-$last\"], timeout_s=560)"
    echo "then give_back, and read summary.md and session.log."
}

keep_parts() {  # move the parts carried in this call to .gpu/received; say which
    local part
    mkdir -p "$GPU_DIR/received"
    for part in "$GPU_DIR"/part-*; do
        [ -f "$part" ] && mv "$part" "$GPU_DIR/received/" && echo "kept $(basename "$part")"
    done
    return 0
}

stage() {  # keep the parts carried in this call for 'run'
    local kept
    kept=$(keep_parts)
    [ -n "$kept" ] || { echo "stage: no $GPU_DIR/part-* in this call: carry one" >&2; return 2; }
    echo "stage: $kept"
}

unpack() {  # unpack SHA256: the staged parts and this call's into .gpu/, checked, and the wheels into .gpu/site
    local sha=$1 got
    keep_parts >/dev/null
    got=$(cat "$GPU_DIR"/received/part-* | sha256sum | cut -d' ' -f1)
    if [ "$got" != "$sha" ]; then
        echo "run: the parts received ($(cd "$GPU_DIR/received" && echo part-*)) are not the payload prepared (sha256" \
             "$got, not $sha): a 'stage' call missed, or the machine went cold between calls; start over" >&2
        return 2
    fi
    rm -rf "$GPU_DIR/wheels" "$GPU_DIR/assets"
    cat "$GPU_DIR"/received/part-* | tar -xf - -C "$GPU_DIR" || return 1
    rm -rf "$GPU_DIR/received"
    install_into_site "$GPU_DIR"/wheels/*.whl
}

install_into_site() {  # wheels (file arguments) into .gpu/site, for the device's python3
    # REHEARSE=1: a dry run of 'run' on a machine without a GPU (the packages already installed, no wheels)
    [ -n "${REHEARSE:-}" ] && return 0
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$GPU_DIR/site" "$@"
}

# The steps together get at most this much of the call (run's timeout_s is 560, at most 600): the tables, the
# summary and the JUnit files are written after the last step, so the call must not be cut off before they are.
SESSION_SECONDS=${SESSION_SECONDS:-470}
SESSION_START=$(date +%s)

step() {  # step NAME SECONDS COMMAND...: run it under a deadline (its own, or what is left of the session's) and
          # log its exit status; never stops the session
    local name=$1 seconds=$2 started rc left
    shift 2
    started=$(date +%s)
    left=$((SESSION_START + SESSION_SECONDS - started))
    if [ "$left" -lt 20 ]; then
        echo "=== $name (skipped: the session's ${SESSION_SECONDS} s are spent): $*"
        echo "=== $name: exit 125 after 0 s"
        return 0
    fi
    [ "$left" -lt "$seconds" ] && seconds=$left
    echo "=== $name (at most ${seconds} s): $*"
    timeout --kill-after=10 "$seconds" "$@"
    rc=$?
    echo "=== $name: exit $rc after $(($(date +%s) - started)) s"
}

run() {  # run SHA256: the payload's, as 'prepare' printed it
    local out=${OUT:-/tmp/out} work=/tmp/gpu-session
    [ -n "${1:-}" ] || { echo "run: give the payload's sha256, as 'prepare' printed it" >&2; return 2; }
    unpack "$1" || return $?
    SESSION_START=$(date +%s)  # the steps' budget starts after the unpacking and installing
    rm -rf "$work" && mkdir -p "$work/junit" "$work/bench" "$out"
    export PYTHONPATH="$PWD/$GPU_DIR/site:$PWD" PYTHONUNBUFFERED=1 FROSTED_SHARED="$PWD/$GPU_DIR/assets"
    export FROSTED_WEIGHTS="$FROSTED_SHARED/$WEIGHTS_IN_SHARED" FROSTED_GRAPH_CACHE="$work/graphs"
    local pytest=(python3 -m pytest --timeout 300 -q -rA -p no:cacheprovider)
    local batches=1,8,32,128 seconds=0.2 draws=10 sizes=1024x1024,1024x576
    # a CPU: only that the steps run and the files come out
    [ -n "${REHEARSE:-}" ] && batches=1 seconds=0.05 draws=1 sizes=1024x576
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda, "sees GPU:", torch.cuda.is_available())'
        python3 -m pip list 2>/dev/null | grep -iE '^(torch|triton|onnxruntime|onnxruntime-gpu|onnx|onnxscript|tensorrt|numpy|opencv-python-headless|grpcio|protobuf) '
        # which runtime, precision and device run here, and why not (the check making each one meets first)
        step runtimes-here 30 python3 -m frosted runtimes
        # the device sampler and its statistics on the GPU; the CPU cases run too (seconds on 16 cores)
        step noise-device-tests 60 "${pytest[@]}" tests/test_noise_device.py --junitxml="$work/junit/noise_device.xml"
        # CUDA head/tail parity (fp32 <= 1e-4, float16 to its tolerance), noise on the device, ORT's CUDA EP, TensorRT
        step runtime-tests 90 "${pytest[@]}" tests/test_runtimes.py -k "cuda or tensorrt or float16" \
            --junitxml="$work/junit/runtimes.xml"
        # TensorRT's float16 and int8 heads against the same heads on the CPU (int8: where NNCF is installed)
        step tensorrt-precision-tests 60 "${pytest[@]}" tests/test_int8.py -k tensorrt \
            --junitxml="$work/junit/int8.xml"
        # the live agent and tail over real gRPC, head + noise and tail on the GPU
        step edge-e2e-cuda 60 "${pytest[@]}" tests/test_edge.py -k "torch-cuda" --junitxml="$work/junit/edge.xml"
        step noise-bench 40 python3 bench/noise_device.py --iterations 30 --out "$work/bench"
        # the GPU rows: torch CPU as the reference, torch on CUDA at fp32 and fp16, ONNX Runtime's CUDA provider
        # and TensorRT where installed (else a skipped column), batches up to 128 for frames/s (TensorRT's engines
        # take 64: 128 runs as two). It writes its tables only at the end: the first CUDA worker compiles the
        # ChaCha20 sampler once per batch shape (inductor's cache serves the next); if it runs out of time, rerun
        # it alone with --batches 1,32
        step runtimes-bench 150 python3 bench/runtimes.py --runtimes torch,torch-cuda,torch-cuda-fp16,onnxruntime-cuda,tensorrt,tensorrt-fp16,tensorrt-int8 \
            --batches "$batches" --rounds 1 --seconds "$seconds" --threads "$(nproc)" --out "$work/bench"
        # the float16 head's AP against float32 on the held-out sets, on the GPU's kernels (bench/results has the
        # CPU's); last: what is left of the session's budget
        step precision-bench 120 python3 bench/precision_accuracy.py --precision float16 --draws "$draws" \
            --sizes "$sizes" --threads "$(nproc)" --out "$work/bench"
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
    cp "$work"/bench/noise_device.* "$work"/bench/float16_accuracy.* "$out"/ 2>/dev/null
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
    run) run "${2:-}" ;;
    *) echo "usage: bench/gpu_session.sh prepare|stage|run SHA256 (see its header)" >&2; exit 2 ;;
esac
