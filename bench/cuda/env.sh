# Sourced by the device scripts of this folder (run from the repository root): the output folder,
# the rustorch binary, the models folder, NVRTC/cuBLAS on the library path, Nsight Compute.
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# Models in memory (/dev/shm) when it has room: a fresh machine makes them first (the 7B file's
# 3.9 GB took ~60 s to make on /tmp).
B=${B:-.cudabin/rustorch}; M=/tmp/rt-models
[ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')" -gt 20000000 ] 2>/dev/null && M=/dev/shm/rt-models
mkdir -p $M
libdirs=$(find /usr/local /usr/lib /opt -maxdepth 6 \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \) -printf '%h\n' 2>/dev/null | grep -v stubs | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}" PATH=/usr/local/cuda/bin:$PATH
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
