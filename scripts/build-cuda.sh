#!/usr/bin/env bash
# Builds `spheromesh` with `--features cuda` on a machine without a CUDA
# toolkit, from PyPI's nvidia-* 13.0 wheels (they match the GPU hosts' driver
# 580 / CUDA 13.0; 13.4+ emits PTX a 13.0 driver cannot JIT). See docs/CUDA.md.
#
#   scripts/build-cuda.sh            # -> target/cuda/release/spheromesh (CUDA, sm_90a)
#   BENCH=1 scripts/build-cuda.sh    # also the criterion bench binary (target/cuda/release/deps/inference-*)
#   CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh   # another GPU generation
#   CUDNN=1 scripts/build-cuda.sh    # --features cudnn: convolutions through cuDNN 9 (adds its
#                                    # wheel, ~520 MB; the GPU host then needs libcudnn.so.9)
set -euo pipefail
cd "$(dirname "$0")/.."
SDK=${CUDA_SDK:-$HOME/.cache/spheromesh-cuda}
ROOT=$SDK/cuda130
mkdir -p "$SDK"
if [ ! -x "$SDK/venv/bin/pip" ]; then python3 -m venv "$SDK/venv"; fi
if [ ! -d "$ROOT/bin" ]; then
  echo "installing CUDA 13.0 compiler wheels into $SDK/venv (~675 MB)"
  "$SDK/venv/bin/pip" install -q --no-deps nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 \
    nvidia-nvvm==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 \
    nvidia-cublas==13.0.2.14 nvidia-curand==10.4.0.35 nvidia-cuda-nvrtc==13.0.88
  C13=$(ls -d "$SDK"/venv/lib/python3*/site-packages/nvidia/cu13)
  mkdir -p "$ROOT/lib64/stubs"
  ln -sfn "$C13/bin" "$ROOT/bin"; ln -sfn "$C13/include" "$ROOT/include"
  ln -sfn "$C13/nvvm" "$ROOT/nvvm"; ln -sfn lib64 "$ROOT/lib"
  for f in "$C13"/lib/*.so.* "$C13"/lib/*.a; do
    b=$(basename "$f"); ln -sfn "$f" "$ROOT/lib64/$b"
    case $b in *.so.*) ln -sfn "$f" "$ROOT/lib64/${b%%.so.*}.so" ;; esac
  done
fi
FEATURES=cuda
if [ "${CUDNN:-0}" = 1 ]; then
  FEATURES=cudnn
  CUDNN_LIB=$(ls -d "$SDK"/venv/lib/python3*/site-packages/nvidia/cudnn/lib 2>/dev/null | head -1 || true)
  if [ -z "$CUDNN_LIB" ]; then
    echo "installing the cuDNN 9 wheel for CUDA 13 into $SDK/venv (~520 MB)"
    "$SDK/venv/bin/pip" install -q --no-deps nvidia-cudnn-cu13==9.13.0.50
    CUDNN_LIB=$(ls -d "$SDK"/venv/lib/python3*/site-packages/nvidia/cudnn/lib | head -1)
  fi
  # The wheel ships only versioned sonames; the linker looks for libcudnn.so.
  ln -sfn "$CUDNN_LIB/libcudnn.so.9" "$ROOT/lib64/libcudnn.so"
  ln -sfn "$CUDNN_LIB/libcudnn.so.9" "$ROOT/lib64/libcudnn.so.9"
fi
# The wheels ship no libcuda (it comes with the driver): link against a stub
# whose every entry point reports "no device". Never put it on a GPU host's
# library path.
if [ ! -f "$ROOT/lib64/stubs/libcuda.so" ]; then
  cargo fetch -q
  CUDARC=$(ls -d "$HOME"/.cargo/registry/src/*/cudarc-0.19.* | head -1)
  grep -oE 'pub unsafe fn cu[A-Za-z0-9_]+' "$CUDARC/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u |
    awk 'BEGIN{print "static const char* m=\"CUDA_ERROR_NO_DEVICE (libcuda stub)\";"}
         /^cuGetError(String|Name)$/{print "int " $1 "(int e,const char**p){if(p)*p=m;return 0;}"; next}
         {print "int " $1 "(void){return 100;}"}' > "$ROOT/lib64/stubs/libcuda_stub.c"
  gcc -shared -fPIC -O1 -Wl,-soname,libcuda.so.1 -o "$ROOT/lib64/stubs/libcuda.so" "$ROOT/lib64/stubs/libcuda_stub.c"
fi
export CUDA_ROOT=$ROOT CUDA_HOME=$ROOT CUDA_PATH=$ROOT CUDA_TOOLKIT_ROOT_DIR=$ROOT
export PATH=$ROOT/bin:$PATH NVCC=$ROOT/bin/nvcc
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90} CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH=$ROOT/lib64:$ROOT/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
export CUDAFORGE_THREADS=${CUDAFORGE_THREADS:-$(nproc)}
cargo build --release --features "$FEATURES" --target-dir target/cuda
if [ "${BENCH:-0}" = 1 ]; then
  cargo bench --no-run --features "$FEATURES" --bench inference --target-dir target/cuda
fi
echo "built target/cuda/release/spheromesh (needs libcuda.so.1, libcublas.so.13, libcurand.so.10, libcudart.so.13 at run time)"
