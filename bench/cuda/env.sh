# Sourced by the device scripts of this folder (run from the repository root): the output folder,
# the rustorch binary, the models folder, NVRTC/cuBLAS on the library path, Nsight Compute.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
B=.cudabin/rustorch; M=/tmp/rt-models; mkdir -p $M
libdirs=$(find /usr/local /usr/lib /opt -maxdepth 6 \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \) -printf '%h\n' 2>/dev/null | grep -v stubs | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}" PATH=/usr/local/cuda/bin:$PATH
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
