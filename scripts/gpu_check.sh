#!/bin/bash
# GPU checks and benchmarks of nbp on a Linux machine with an NVIDIA GPU, run from the repository root.
#
# Usage: scripts/gpu_check.sh [PHASE ...]    (no phase: all of them, in this order)
#   torch      the official sampler's cost in PyTorch on the same GPU (scripts/bench/official_sampler_torch.py)
#   cuda       bench sample, official-base, NBP-16 against NTP, f32
#   bf16       the same with bf16 weights
#   tokenizer  bench tokenizer, official preset, on cuda and wgpu
#   wgpu       bench sample, official-base, NBP-16 against NTP, on wgpu (the GPU's Vulkan driver)
#   demo       nbp-cli sample with the bundled demo on cuda, wgpu and flex; greedy ids compared across them
#   tests      the GPU tests (kv_cache and gpu_tokenizer, the ignored CUDA tests included)
#   flex       bench sample, official-base, NBP-16 against NTP, on the machine's CPU cores
#
# The machine needs no Rust toolchain: build here, then copy the binaries over compressed in .bin/:
#   cargo build --release -p nbp-cli --features wgpu,cuda; xz -c target/release/nbp-cli > .bin/nbp-cli.xz
#   cargo test --no-run --test kv_cache --test gpu_tokenizer; `strip --strip-debug` and `xz -c` the two test
#   binaries (target/debug/deps/<name>-<hash>) to .bin/kv_cache.xz and .bin/gpu_tokenizer.xz
# If the machine has no Vulkan loader, put the .deb files of libvulkan1 (and libglvnd0) in .gl/.
# CubeCL keeps its tuning results in target/autotune under the repository, so later runs on the same machine skip
# the tuning. A step killed by its time limit while tuning left results that made every later CUDA run fail at its
# first kernel launch (CUDA_ERROR_INVALID_VALUE; seen on two machines), so after a timeout the cache is removed.
# Results of the H100 sessions are in README.md ("On a GPU"). A first run of official-base compiles and tunes
# kernels for minutes; each step below has a time limit (T seconds) so that one slow step cannot eat the lease.
set -u
OUT=${OUT:-/tmp/nbp-gpu-out}; mkdir -p "$OUT"
for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done; ldconfig
if ! ls /usr/share/vulkan/icd.d/*nvidia* /etc/vulkan/icd.d/*nvidia* >/dev/null 2>&1 \
   && [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
# The test binaries find tests/fixtures through the directory of Cargo.lock above this variable.
export CARGO_MANIFEST_DIR=$PWD
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
mkdir -p /tmp/b; for f in .bin/*.xz; do n=$(basename $f .xz); [ -x /tmp/b/$n ] || { xz -dc $f > /tmp/b/$n; chmod +x /tmp/b/$n; }; done
B=/tmp/b/nbp-cli
step() {
  echo; echo "=== $*"; local t0=$(date +%s%N)
  timeout ${T:-200} "$@" 2>&1 | grep -v '━\|──' | tail -${N:-12}; local rc=${PIPESTATUS[0]}
  echo "--- rc $rc in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
  [ $rc -eq 124 ] && rm -rf target/autotune && echo "--- timed out: removed CubeCL's autotune cache"
}

phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(torch cuda bf16 tokenizer wgpu demo tests flex)
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for phase in "${phases[@]}"; do case $phase in
torch)
  N=8 step python3 scripts/bench/official_sampler_torch.py --block 16 --versus 1 --warmup 1 --repeats 2
  N=8 step python3 scripts/bench/official_sampler_torch.py --block 16 --versus 1 --warmup 1 --repeats 2 --dtype bf16 ;;
cuda)
  T=${T_CUDA:-420} N=10 step $B bench sample --device cuda --block 16 --versus 1 --warmup 1 --repeats 2 ;;
bf16)
  T=${T_CUDA:-300} N=10 step $B bench sample --device cuda --block 16 --versus 1 --warmup 1 --repeats 2 --precision bf16 ;;
tokenizer)
  for d in ${TOKENIZER_DEVICES:-cuda wgpu}; do N=8 step $B bench tokenizer --device $d --warmup 1 --repeats 2; done ;;
wgpu)
  T=${T_WGPU:-300} N=10 step $B bench sample --device wgpu --block 16 --versus 1 --warmup 1 --repeats 2 ;;
demo)
  step $B sample --device cuda --out $OUT/sample_cuda.gif
  step $B sample --device wgpu --out $OUT/sample_wgpu.gif
  for d in flex wgpu cuda; do step $B sample --device $d --greedy --out /tmp/g.gif --save-tokens /tmp/greedy_$d.npy; done
  python3 -c "
import numpy as np
f=np.load('/tmp/greedy_flex.npy')
for d in ['wgpu','cuda']:
    g=np.load(f'/tmp/greedy_{d}.npy'); print('greedy', d, 'vs flex: fraction of equal tokens', (f==g).mean(), 'clips identical', [bool((f[i]==g[i]).all()) for i in range(len(f))])
" ;;
tests)
  T=${T_TESTS:-400} step /tmp/b/gpu_tokenizer cuda --include-ignored --nocapture
  T=${T_TESTS:-400} step /tmp/b/kv_cache cuda --include-ignored --test-threads 1 ;;
flex)
  T=${T_FLEX:-300} N=10 step $B bench sample --device flex --block 16 --versus 1 --repeats ${FLEX_REPEATS:-2} ;;
*) echo "unknown phase $phase" ;;
esac; done
