#!/bin/bash
# GPU checks and benchmarks of nbp on a Linux machine with an NVIDIA GPU, run from the repository root.
#
# The machine needs no Rust toolchain: build here, then copy the binaries over compressed in .bin/:
#   cargo build -p nbp-cli && cargo test --no-run --test kv_cache --test gpu_tokenizer
#   `strip --strip-debug` (function names stay, for RUST_BACKTRACE=1) and `xz -c` target/debug/nbp-cli and the two test binaries (target/debug/deps/<name>-<hash>) to
#   .bin/nbp-cli.xz, .bin/kv_cache.xz and .bin/gpu_tokenizer.xz
# If the machine has no Vulkan loader, put the .deb files of libvulkan1 (and libglvnd0) in .gl/.
# Results of two sessions on an H100 are in README.md ("On a GPU"). A first run of official-base compiles and
# tunes kernels for minutes: give each bench step several minutes, or run it twice on the same warm machine.
set -u
OUT=${OUT:-/tmp/nbp-gpu-out}; mkdir -p "$OUT"
for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig
# The test binaries find tests/fixtures through the directory of Cargo.lock above this variable.
export CARGO_MANIFEST_DIR=$PWD
mkdir -p /tmp/b; for f in .bin/*.xz; do n=$(basename $f .xz); xz -dc $f > /tmp/b/$n; chmod +x /tmp/b/$n; done
B=/tmp/b/nbp-cli
step() { echo; echo "=== $*"; local t0=$(date +%s%N); timeout ${T:-200} "$@" 2>&1 | grep -v '━\|──' | tail -${N:-12}; echo "--- rc ${PIPESTATUS[0]} in $(( ($(date +%s%N) - t0) / 1000000 )) ms"; }
CUBECL_AUTOTUNE_LEVEL=minimal step /tmp/b/gpu_tokenizer cuda --include-ignored --nocapture
T=900 CUBECL_AUTOTUNE_LEVEL=minimal step /tmp/b/kv_cache cuda --include-ignored --test-threads 1
step $B sample --device cuda --out $OUT/sample_cuda.gif
step $B sample --device wgpu --out $OUT/sample_wgpu.gif
step $B sample --device wgpu --greedy --out /tmp/g.gif --save-tokens /tmp/greedy_wgpu.npy
step $B sample --device flex --greedy --out /tmp/g.gif --save-tokens /tmp/greedy_flex.npy
step $B sample --device cuda --greedy --out /tmp/g.gif --save-tokens /tmp/greedy_cuda.npy
python3 -c "
import numpy as np
f=np.load('/tmp/greedy_flex.npy')
for d in ['wgpu','cuda']:
    g=np.load(f'/tmp/greedy_{d}.npy'); print('greedy', d, 'vs flex: fraction of equal tokens', (f==g).mean(), 'clips identical', [bool((f[i]==g[i]).all()) for i in range(len(f))])
"
N=6 step $B bench sample --device cuda --block 16 --warmup 1 --repeats 2
N=6 step $B bench sample --device cuda --block 1 --warmup 1 --repeats 1
N=6 step $B bench sample --device cuda --block 16 --warmup 1 --repeats 2 --precision bf16
N=6 step $B bench sample --device cuda --block 1 --warmup 1 --repeats 1 --precision bf16
N=8 step $B bench tokenizer --device cuda --warmup 1 --repeats 2
N=6 step $B bench sample --device wgpu --block 16 --warmup 1 --repeats 2
N=6 step $B bench sample --device wgpu --block 1 --warmup 1 --repeats 1
N=8 step $B bench tokenizer --device wgpu --warmup 1 --repeats 2
