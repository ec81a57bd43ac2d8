// rustorch CUDA kernels, compiled at load time by NVRTC (no CUDA headers needed: half <-> float and
// dp4a go through inline PTX). Weight rows are in their GGUF block formats; the block byte layouts
// are ggml's (see rustorch_quant for the scalar reference of each).
//
// Activation format of the mat-vec kernels ("q8_1 split"): int8 codes `aq[ncols]` and per block of 32
// a float2 `(d, s)` with `x ≈ d * q` and `s = d * sum(q)`; the codes are 4-byte aligned, so dp4a
// reads them directly.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define T_F32 0
#define T_F16 1
#define T_Q4_0 2
#define T_Q4_1 3
#define T_Q5_0 6
#define T_Q5_1 7
#define T_Q8_0 8
#define T_Q4_K 12
#define T_Q5_K 13
#define T_Q6_K 14
// Q6_K with each 210-byte block padded to 224 bytes (upload's repacking), so every block, its
// quants and its high bits start 16-byte aligned and load as uint4.
#define T_Q6_KP 200

#define NEG_BIG (-1e30f)

__device__ __forceinline__ float h2f(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ u16 f2h(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
// f16 at a 2-byte aligned address.
__device__ __forceinline__ float ldh(const u8* p) { return h2f(*(const u16*)p); }
// 32 bits at a 2-byte aligned address (blocks of 18, 22, 34 and 210 bytes are only 2-aligned).
__device__ __forceinline__ u32 ld2(const u8* p) {
    const u16* q = (const u16*)p;
    return (u32)q[0] | ((u32)q[1] << 16);
}
__device__ __forceinline__ u32 ld4(const u8* p) { return *(const u32*)p; }
__device__ __forceinline__ int dp4a(int a, int b, int c) {
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
// Programmatic Dependent Launch (sm_90+; no-ops before, and when the kernel was launched without
// the attribute): `grid_wait` blocks until the previous kernel in the stream has finished and its
// writes are visible; `grid_launch` lets the next kernel's blocks start (they run up to their own
// `grid_wait`). Every kernel of the decode step calls both before it reads an activation or writes.
__device__ __forceinline__ void grid_wait() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void grid_launch() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void prefetch_l2(const void* p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int block_elems(int t) { return t >= T_Q4_K ? 256 : (t <= T_F16 ? 1 : 32); }
__device__ __forceinline__ int block_bytes(int t) {
    switch (t) {
    case T_F32: return 4;
    case T_F16: return 2;
    case T_Q4_0: return 18;
    case T_Q4_1: return 20;
    case T_Q5_0: return 22;
    case T_Q5_1: return 24;
    case T_Q8_0: return 34;
    case T_Q4_K: return 144;
    case T_Q5_K: return 176;
    case T_Q6_KP: return 224;
    default: return 210; // T_Q6_K
    }
}
__device__ __forceinline__ u64 row_bytes(int t, int ncols) {
    return (u64)(ncols / block_elems(t)) * (u64)block_bytes(t);
}

// ggml's get_scale_min_k4: the 6-bit scale and min of sub-block j of a Q4_K/Q5_K block, from its
// 12 scale bytes as `q(i)` gives them (read through a pointer, or held in registers).
template <class Byte>
__device__ __forceinline__ void scale_min_k4_of(int j, Byte q, int* sc, int* m) {
    if (j < 4) {
        *sc = q(j) & 63;
        *m = q(j + 4) & 63;
    } else {
        *sc = (q(j + 4) & 0xF) | ((q(j - 4) >> 6) << 4);
        *m = (q(j + 4) >> 4) | ((q(j) >> 6) << 4);
    }
}
__device__ __forceinline__ void scale_min_k4(int j, const u8* q, int* sc, int* m) {
    scale_min_k4_of(j, [q](int i) { return (int)q[i]; }, sc, m);
}

// Element i of a row of type t (the dequantize path: embeddings, prompt GEMM weights, tests).
__device__ float dq(int t, const u8* row, int i) {
    switch (t) {
    case T_F32: return ((const float*)row)[i];
    case T_F16: return h2f(((const u16*)row)[i]);
    case T_Q4_0: {
        const u8* b = row + (i >> 5) * 18;
        int j = i & 31;
        int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
        return ldh(b) * (float)(q - 8);
    }
    case T_Q4_1: {
        const u8* b = row + (i >> 5) * 20;
        int j = i & 31;
        int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
        return ldh(b) * (float)q + ldh(b + 2);
    }
    case T_Q5_0: {
        const u8* b = row + (i >> 5) * 22;
        int j = i & 31;
        u32 qh = ld2(b + 2);
        int lo = j < 16 ? (b[6 + j] & 15) : (b[6 + j - 16] >> 4);
        int q = lo | (((qh >> j) & 1) << 4);
        return ldh(b) * (float)(q - 16);
    }
    case T_Q5_1: {
        const u8* b = row + (i >> 5) * 24;
        int j = i & 31;
        u32 qh = ld4(b + 4);
        int lo = j < 16 ? (b[8 + j] & 15) : (b[8 + j - 16] >> 4);
        int q = lo | (((qh >> j) & 1) << 4);
        return ldh(b) * (float)q + ldh(b + 2);
    }
    case T_Q8_0: {
        const u8* b = row + (i >> 5) * 34;
        return ldh(b) * (float)(i8)b[2 + (i & 31)];
    }
    case T_Q4_K: {
        const u8* b = row + (i >> 8) * 144;
        int r = i & 255, c = r >> 6, rr = r & 63;
        int sub = 2 * c + (rr >= 32);
        u8 byte = b[16 + c * 32 + (rr & 31)];
        int q = rr < 32 ? (byte & 15) : (byte >> 4);
        int sc, m;
        scale_min_k4(sub, b + 4, &sc, &m);
        return ldh(b) * (float)sc * (float)q - ldh(b + 2) * (float)m;
    }
    case T_Q5_K: {
        const u8* b = row + (i >> 8) * 176;
        int r = i & 255, c = r >> 6, rr = r & 63, l = rr & 31;
        int sub = 2 * c + (rr >= 32);
        u8 byte = b[48 + c * 32 + l];
        int q = (rr < 32 ? (byte & 15) : (byte >> 4)) + (((b[16 + l] >> sub) & 1) << 4);
        int sc, m;
        scale_min_k4(sub, b + 4, &sc, &m);
        return ldh(b) * (float)sc * (float)q - ldh(b + 2) * (float)m;
    }
    default: { // T_Q6_K, T_Q6_KP
        const u8* b = row + (i >> 8) * (t == T_Q6_KP ? 224 : 210);
        int r = i & 255, h = r >> 7, rr = r & 127, k = rr >> 5, l = rr & 31;
        u8 qlb = b[h * 64 + l + (k & 1) * 32];
        int lo = k < 2 ? (qlb & 15) : (qlb >> 4);
        int hi = (b[128 + h * 32 + l] >> (2 * k)) & 3;
        int q = (lo | (hi << 4)) - 32;
        float sc = (float)(i8)b[192 + h * 8 + (l >> 4) + 2 * k];
        return ldh(b + 208) * sc * (float)q;
    }
    }
}

// rows x cols weights of type t -> f16 (prompt GEMMs) or f32 (tests).
extern "C" __global__ void dequant_f16(const u8* w, int t, int rows, int cols, u16* out) {
    u64 total = (u64)rows * cols;
    u64 rb = row_bytes(t, cols);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols;
        int c = (int)(i - r * cols);
        out[i] = f2h(dq(t, w + r * rb, c));
    }
}
extern "C" __global__ void dequant_f32(const u8* w, int t, int rows, int cols, float* out) {
    u64 total = (u64)rows * cols;
    u64 rb = row_bytes(t, cols);
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u64 r = i / cols;
        int c = (int)(i - r * cols);
        out[i] = dq(t, w + r * rb, c);
    }
}

// out[t] = table[token of row t]. `io` holds the step's rows as (token, position, sequence).
extern "C" __global__ void embed(const u8* w, int t, int cols, const int* io, float* out) {
    grid_wait();
    grid_launch();
    int row = io[3 * blockIdx.x];
    const u8* src = w + (u64)row * row_bytes(t, cols);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) out[(u64)blockIdx.x * cols + c] = dq(t, src, c);
}

// ---------------------------------------------------------------------------------------------
// Quantized dot products: one lane takes one 32-weight chunk `c` of a row against the matching
// q8_1 activation block (`a`: its 8 words of codes, `ds`: (d, d * sum)).

__device__ __forceinline__ u32 spread4(u32 x) { // 4 bits -> bit 4 of each of 4 bytes
    return ((x & 1) << 4) | ((x & 2) << 11) | ((x & 4) << 18) | ((x & 8) << 25);
}

template <int T> __device__ __forceinline__ float dot_chunk(const u8* row, int c, const int* a, float2 ds);

template <> __device__ __forceinline__ float dot_chunk<T_Q4_0>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + c * 18;
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        u32 v = ld2(b + 2 + 4 * k);
        s = dp4a(v & 0x0F0F0F0F, a[k], s);
        s = dp4a((v >> 4) & 0x0F0F0F0F, a[k + 4], s);
    }
    return ldh(b) * (ds.x * (float)s - 8.f * ds.y);
}
template <> __device__ __forceinline__ float dot_chunk<T_Q4_1>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + c * 20;
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        u32 v = ld4(b + 4 + 4 * k);
        s = dp4a(v & 0x0F0F0F0F, a[k], s);
        s = dp4a((v >> 4) & 0x0F0F0F0F, a[k + 4], s);
    }
    return ldh(b) * ds.x * (float)s + ldh(b + 2) * ds.y;
}
template <> __device__ __forceinline__ float dot_chunk<T_Q5_0>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + c * 22;
    u32 qh = ld2(b + 2);
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        u32 v = ld2(b + 6 + 4 * k);
        u32 lo = (v & 0x0F0F0F0F) | spread4((qh >> (4 * k)) & 15);
        u32 hi = ((v >> 4) & 0x0F0F0F0F) | spread4((qh >> (4 * k + 16)) & 15);
        s = dp4a(lo, a[k], s);
        s = dp4a(hi, a[k + 4], s);
    }
    return ldh(b) * (ds.x * (float)s - 16.f * ds.y);
}
template <> __device__ __forceinline__ float dot_chunk<T_Q5_1>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + c * 24;
    u32 qh = ld4(b + 4);
    int s = 0;
#pragma unroll
    for (int k = 0; k < 4; k++) {
        u32 v = ld4(b + 8 + 4 * k);
        u32 lo = (v & 0x0F0F0F0F) | spread4((qh >> (4 * k)) & 15);
        u32 hi = ((v >> 4) & 0x0F0F0F0F) | spread4((qh >> (4 * k + 16)) & 15);
        s = dp4a(lo, a[k], s);
        s = dp4a(hi, a[k + 4], s);
    }
    return ldh(b) * ds.x * (float)s + ldh(b + 2) * ds.y;
}
template <> __device__ __forceinline__ float dot_chunk<T_Q8_0>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + c * 34;
    int s = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) s = dp4a(ld2(b + 2 + 4 * k), a[k], s);
    return ldh(b) * ds.x * (float)s;
}
template <> __device__ __forceinline__ float dot_chunk<T_Q4_K>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + (c >> 3) * 144;
    int sub = c & 7;
    const u8* q = b + 16 + (sub >> 1) * 32;
    int shift = (sub & 1) * 4;
    uint4 v0 = ((const uint4*)q)[0], v1 = ((const uint4*)q)[1];
    u32 v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) s = dp4a((v[k] >> shift) & 0x0F0F0F0F, a[k], s);
    int sc, m;
    scale_min_k4(sub, b + 4, &sc, &m);
    return ldh(b) * (float)sc * ds.x * (float)s - ldh(b + 2) * (float)m * ds.y;
}
template <> __device__ __forceinline__ float dot_chunk<T_Q5_K>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + (c >> 3) * 176;
    int sub = c & 7;
    const u8* ql = b + 48 + (sub >> 1) * 32;
    const u8* qh = b + 16;
    int shift = (sub & 1) * 4;
    uint4 l0 = ((const uint4*)ql)[0], l1 = ((const uint4*)ql)[1];
    uint4 h0 = ((const uint4*)qh)[0], h1 = ((const uint4*)qh)[1];
    u32 lv[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
    u32 hv[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
    int s = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 v = ((lv[k] >> shift) & 0x0F0F0F0F) | (((hv[k] >> sub) & 0x01010101) << 4);
        s = dp4a(v, a[k], s);
    }
    int sc, m;
    scale_min_k4(sub, b + 4, &sc, &m);
    return ldh(b) * (float)sc * ds.x * (float)s - ldh(b + 2) * (float)m * ds.y;
}
// Sub-block `sub` of the Q6_K block at `b` (plain or padded: the same layout up to byte 210);
// `lo(k)` and `hi(k)` give word k (0..7) of its low nibbles and of its high bits (read where
// called, or held in registers).
template <class Lo, class Hi>
__device__ __forceinline__ float q6_chunk(const u8* b, int sub, Lo lo, Hi hi, const int* a, float2 ds) {
    int h = sub >> 2, k4 = sub & 3;
    int sl = (k4 >> 1) * 4, sh = 2 * k4;
    int s0 = 0, s1 = 0;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        u32 v = ((lo(k) >> sl) & 0x0F0F0F0F) | (((hi(k) >> sh) & 0x03030303) << 4);
        int p = dp4a(v, a[k], 0) - 32 * dp4a(0x01010101, a[k], 0);
        if (k < 4) s0 += p; else s1 += p;
    }
    float sc0 = (float)(i8)b[192 + h * 8 + 2 * k4];
    float sc1 = (float)(i8)b[192 + h * 8 + 2 * k4 + 1];
    return ldh(b + 208) * ds.x * (sc0 * (float)s0 + sc1 * (float)s1);
}
template <> __device__ __forceinline__ float dot_chunk<T_Q6_K>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + (c >> 3) * 210;
    int sub = c & 7;
    const u8* ql = b + (sub >> 2) * 64 + (sub & 1) * 32;
    const u8* qh = b + 128 + (sub >> 2) * 32;
    return q6_chunk(b, sub, [ql](int k) { return ld2(ql + 4 * k); }, [qh](int k) { return ld2(qh + 4 * k); }, a, ds);
}
// Padded Q6_K (224-byte blocks): the codes by 16-byte loads.
template <> __device__ __forceinline__ float dot_chunk<T_Q6_KP>(const u8* row, int c, const int* a, float2 ds) {
    const u8* b = row + (c >> 3) * 224;
    int sub = c & 7;
    const uint4* ql = (const uint4*)(b + (sub >> 2) * 64 + (sub & 1) * 32);
    const uint4* qh = (const uint4*)(b + 128 + (sub >> 2) * 32);
    uint4 l0 = ql[0], l1 = ql[1], h0 = qh[0], h1 = qh[1];
    u32 lv[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
    u32 hv[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
    return q6_chunk(b, sub, [&lv](int k) { return lv[k]; }, [&hv](int k) { return hv[k]; }, a, ds);
}
// f16 weights (every format without a quantized kernel is widened to f16 at upload).
template <> __device__ __forceinline__ float dot_chunk<T_F16>(const u8* row, int c, const int* a, float2 ds) {
    const u32* w = (const u32*)(row + c * 64);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int av = a[k];
        u32 w0 = w[2 * k], w1 = w[2 * k + 1];
        s += h2f((u16)(w0 & 0xFFFF)) * (float)(i8)(av & 0xFF);
        s += h2f((u16)(w0 >> 16)) * (float)(i8)((av >> 8) & 0xFF);
        s += h2f((u16)(w1 & 0xFFFF)) * (float)(i8)((av >> 16) & 0xFF);
        s += h2f((u16)(w1 >> 16)) * (float)(i8)((av >> 24) & 0xFF);
    }
    return ds.x * s;
}

template <int T>
__device__ __forceinline__ float chunk_at(const u8* row, int c, const int* aq, const float2* ads) {
    const int4* a4 = (const int4*)(aq + c * 8);
    int4 x = a4[0], y = a4[1];
    int a[8] = {x.x, x.y, x.z, x.w, y.x, y.y, y.z, y.w};
    return dot_chunk<T>(row, c, a, ads[c]);
}
// A lane's share of a row: chunks i, i + stride, ...; two at a time so both chunks' loads are in
// flight together.
template <int T>
__device__ __forceinline__ float row_dot(const u8* row, int nch, const int* aq, const float2* ads, int i,
                                         int stride) {
    float s0 = 0.f, s1 = 0.f;
    int c = i;
    for (; c + stride < nch; c += 2 * stride) {
        s0 += chunk_at<T>(row, c, aq, ads);
        s1 += chunk_at<T>(row, c + stride, aq, ads);
    }
    if (c < nch) s0 += chunk_at<T>(row, c, aq, ads);
    return s0 + s1;
}
__device__ float row_dot_t(int t, const u8* row, int nch, const int* aq, const float2* ads, int i, int stride) {
    switch (t) {
    case T_Q4_0: return row_dot<T_Q4_0>(row, nch, aq, ads, i, stride);
    case T_Q4_1: return row_dot<T_Q4_1>(row, nch, aq, ads, i, stride);
    case T_Q5_0: return row_dot<T_Q5_0>(row, nch, aq, ads, i, stride);
    case T_Q5_1: return row_dot<T_Q5_1>(row, nch, aq, ads, i, stride);
    case T_Q8_0: return row_dot<T_Q8_0>(row, nch, aq, ads, i, stride);
    case T_Q4_K: return row_dot<T_Q4_K>(row, nch, aq, ads, i, stride);
    case T_Q5_K: return row_dot<T_Q5_K>(row, nch, aq, ads, i, stride);
    case T_Q6_K: return row_dot<T_Q6_K>(row, nch, aq, ads, i, stride);
    case T_Q6_KP: return row_dot<T_Q6_KP>(row, nch, aq, ads, i, stride);
    default: return row_dot<T_F16>(row, nch, aq, ads, i, stride);
    }
}

// One warp quantizes the 32 values held one per lane into q8_1 block `blk`.
__device__ __forceinline__ void quant_lane(float v, int lane, u64 blk, i8* aq, float2* ads) {
    float amax = warp_max(fabsf(v));
    float d = amax / 127.f;
    float id = d != 0.f ? 1.f / d : 0.f;
    int q = (int)roundf(v * id);
    float sum = warp_sum((float)q);
    aq[blk * 32 + lane] = (i8)q;
    if (lane == 0) ads[blk] = make_float2(d, d * sum);
}

// The weight row of mat-vec work item gi (see matvec), null past the last; its type in *t.
__device__ __forceinline__ const u8* mv_row(int gi, int mode, int ncols, const u8* w0, int t0, int r0,
                                            const u8* w1, int t1, int r1, const u8* w2, int t2, int r2,
                                            int* t) {
    const u8* w = 0;
    int row = 0;
    if (mode == 2) {
        row = gi >> 1;
        if (row < r0) {
            w = (gi & 1) ? w1 : w0;
            *t = (gi & 1) ? t1 : t0;
        }
    } else if (gi < r0) {
        row = gi; w = w0; *t = t0;
    } else if (gi < r0 + r1) {
        row = gi - r0; w = w1; *t = t1;
    } else if (gi < r0 + r1 + r2) {
        row = gi - r0 - r1; w = w2; *t = t2;
    }
    return w ? w + (u64)row * row_bytes(*t, ncols) : 0;
}
// Lane `i` of `n` prefetches its share of the 128-byte lines of a weight row into L2.
__device__ __forceinline__ void prefetch_row(const u8* wrow, int t, int ncols, int i, int n) {
    if (!wrow) return;
    u64 p0 = (u64)wrow & ~(u64)127, p1 = (u64)wrow + row_bytes(t, ncols);
    int lines = (int)((p1 - p0 + 127) >> 7);
    for (int l = i; l < lines; l += n) prefetch_l2((const void*)(p0 + (u64)l * 128));
}

// The slot of position p in a layer's cache of `cap` positions per sequence: p % cap (a
// sliding-window layer's ring of its last positions; a full layer holds p at p).
__device__ __forceinline__ int kv_slot(int p, int cap) {
    return p < cap ? p : p % cap;
}

// Positions a block of a paged layer holds (backend::KV_BLOCK).
#define KV_BLOCK 16
// A layer's cache holds, per KV head, a plane of n_ctx rows of head_dim f16 values. A paged layer
// has one plane of the whole pool, shared by every sequence: position p of a sequence is in row
// tab[p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK, `tab` being the sequence's block table. A layer
// that is not paged (a sliding window's ring) has a plane per sequence, seq_stride values apart,
// and p is in row p % n_ctx of its sequence's.
//
// Sequence `seq`'s block table (null when the layer is not paged: `tables` null).
__device__ __forceinline__ const int* kv_table(const int* tables, int tlen, int seq) {
    return tables ? tables + (u64)seq * tlen : 0;
}
// The row of position p of the sequence whose table is `tab` (null: its ring of n_ctx rows).
__device__ __forceinline__ int kv_row(const int* tab, int p, int n_ctx) {
    return tab ? tab[p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK : kv_slot(p, n_ctx);
}
// Where row `p` of sequence `seq`, KV head `kvh` starts in a layer's cache, in values.
__device__ __forceinline__ u64 kv_at(const int* tables, int tlen, u64 seq_stride, int seq, int kvh,
                                     int p, int n_ctx, int hd) {
    const int* tab = kv_table(tables, tlen, seq);
    return (tab ? 0 : (u64)seq * seq_stride) + ((u64)kvh * n_ctx + kv_row(tab, p, n_ctx)) * hd;
}

// Mat-vec of up to three weights sharing one input (q/k/v). A block of nw <= 16 warps takes
// nw / wpr work items, `wpr` warps each (wide rows get more lanes, so every lane has at most a few chunks and all
// of its loads are in flight at once). An item is one output row; in mode 2 an item is one row of
// the gate or of the up weight (alternating), so both rows load at the same time.
//
// mode 0: o = W·x; mode 1: o += W·x (residual); mode 2: o0 = silu(W0·x) * (W1·x) over r0 rows;
// mode 3: q/k/v of one row (`io`: its token, position, sequence): q and k rotated (RoPE at the
// row's position, pairs of adjacent rows, which share a block since wpr <= 2) into o0 and o1, v
// into o2, and k and v as f16 into the layer's cache of the row's sequence at its position.
extern "C" __global__ void matvec(const u8* w0, int t0, int r0, float* o0,
                                  const u8* w1, int t1, int r1, float* o1,
                                  const u8* w2, int t2, int r2, float* o2,
                                  const i8* aq, const float2* ads, int ncols, int mode, int wpr,
                                  const int* io, u16* kc, u16* vc, int n_ctx, u64 seq_stride,
                                  const int* tables, int tlen, int hd, int n_rot, float theta_scale,
                                  int flags) {
    __shared__ float part[16];
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    int nch = ncols >> 5;
    int items = n_warps / wpr;
    const int* a = (const int*)aq;
    int gi = blockIdx.x * items + warp / wpr;
    int t = 0;
    const u8* wrow = mv_row(gi, mode, ncols, w0, t0, r0, w1, t1, r1, w2, t2, r2, &t);
    // The weights do not depend on the previous kernel: pull this warp's share of its row into L2
    // while that kernel finishes (flags bit 0), then wait for it.
    if (flags & 1) prefetch_row(wrow, t, ncols, (warp % wpr) * 32 + lane, 32 * wpr);
    grid_wait();
    grid_launch();
    float s = 0.f;
    if (wrow) s = row_dot_t(t, wrow, nch, a, ads, (warp % wpr) * 32 + lane, 32 * wpr);
    s = warp_sum(s);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (threadIdx.x >= items) return;
    int it = threadIdx.x;
    float v = 0.f;
    for (int k = 0; k < wpr; k++) v += part[it * wpr + k];
    int g = blockIdx.x * items + it;
    if (mode == 2) {
        if ((g & 1) || (g >> 1) >= r0) return;
        float u = 0.f;
        for (int k = 0; k < wpr; k++) u += part[(it + 1) * wpr + k];
        o0[g >> 1] = v / (1.f + expf(-v)) * u;
        return;
    }
    if (mode == 3) {
        int pos = io[1], seq = io[2];
        if (g >= r0 + r1) { // v: straight into the cache
            g -= r0 + r1;
            if (g < r2) {
                o2[g] = v;
                vc[kv_at(tables, tlen, seq_stride, seq, g / hd, pos, n_ctx, hd) + g % hd] = f2h(v);
            }
            return;
        }
        if (g & 1) return; // the even row of a pair rotates both
        float v1 = 0.f;
        for (int k = 0; k < wpr; k++) v1 += part[(it + 1) * wpr + k];
        bool is_q = g < r0;
        int r = is_q ? g : g - r0;
        int d = r % hd;
        float x0 = v, x1 = v1;
        if (d < n_rot) {
            float theta = (float)pos; // as ggml: theta_i = pos * scale^i by repeated products
            for (int j = 0; j < d / 2; j++) theta *= theta_scale;
            float sn, cs;
            sincosf(theta, &sn, &cs);
            x0 = v * cs - v1 * sn;
            x1 = v * sn + v1 * cs;
        }
        float* of = is_q ? o0 + r : o1 + r;
        of[0] = x0;
        of[1] = x1;
        if (!is_q) {
            u16* dst = kc + kv_at(tables, tlen, seq_stride, seq, r / hd, pos, n_ctx, hd) + d;
            dst[0] = f2h(x0);
            dst[1] = f2h(x1);
        }
        return;
    }
    float* o;
    if (g < r0) {
        o = o0;
    } else if (g < r0 + r1) {
        g -= r0; o = o1;
    } else if (g < r0 + r1 + r2) {
        g -= r0 + r1; o = o2;
    } else {
        return;
    }
    o[g] = mode == 1 ? o[g] + v : v;
}

// ---------------------------------------------------------------------------------------------
// Activations.

// x (n_total values, a multiple of 32) -> q8_1; one warp per block of 32.
extern "C" __global__ void quantize_q8_1(const float* x, int n_total, i8* aq, float2* ads) {
    grid_wait();
    grid_launch();
    int lane = threadIdx.x & 31;
    u64 blk = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (blk * 32 >= (u64)n_total) return;
    quant_lane(x[blk * 32 + lane], lane, blk, aq, ads);
}

// RMSNorm of row blockIdx.x (width dim, a multiple of 32, at most RN_MAX * blockDim) times w,
// written to any of: f32, f16, q8_1 (the next mat-vec's input). Rows are read from x at row offset
// `x_row0 + blockIdx.x`. Thread t holds elements t + i * blockDim, so each q8_1 block of 32 lies in
// one warp.
#define RN_MAX 8
extern "C" __global__ void rms_norm(const float* x, int x_row0, const float* w, float eps, int dim,
                                    float* of32, u16* of16, i8* aq, float2* ads) {
    __shared__ float red[32];
    int bd = blockDim.x, tid = threadIdx.x;
    float xv[RN_MAX], wv[RN_MAX];
    // The weights do not depend on the previous kernel: read them while it finishes.
#pragma unroll
    for (int i = 0; i < RN_MAX; i++) {
        int e = tid + i * bd;
        wv[i] = e < dim ? w[e] : 0.f;
    }
    grid_wait();
    grid_launch();
    const float* xr = x + (u64)(x_row0 + blockIdx.x) * dim;
    float ss = 0.f;
#pragma unroll
    for (int i = 0; i < RN_MAX; i++) {
        int e = tid + i * bd;
        xv[i] = e < dim ? xr[e] : 0.f;
        ss += xv[i] * xv[i];
    }
    ss = warp_sum(ss);
    int warp = tid >> 5, lane = tid & 31, nw = bd >> 5;
    if (lane == 0) red[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float v = lane < nw ? red[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    float scale = 1.f / sqrtf(red[0] / (float)dim + eps);
    u64 ob = (u64)blockIdx.x * dim;
#pragma unroll
    for (int i = 0; i < RN_MAX; i++) {
        int base = warp * 32 + i * bd;
        if (base >= dim) break;
        int e = base + lane;
        float y = xv[i] * scale * wv[i];
        if (of32) of32[ob + e] = y;
        if (of16) of16[ob + e] = f2h(y);
        if (aq) quant_lane(y, lane, (ob + base) >> 5, aq, ads);
    }
}

// g = silu(g) * u: in place when `keep`, and as f16 into `out` when not null (the next GEMM's
// input).
extern "C" __global__ void swiglu(float* g, const float* u, u16* out, int n, int keep) {
    grid_wait();
    grid_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float x = g[i];
        float y = x / (1.f + expf(-x)) * u[i];
        if (keep) g[i] = y;
        if (out) out[i] = f2h(y);
    }
}

// RoPE of q and k in place (pairs as in `rope`, factors `ff` may be null), then k and v as f16
// into the layer's cache of each row's sequence at its position. grid (n, n_head + n_head_kv),
// block hd / 2: thread i < n_rot / 2 rotates pair i, the others carry two unrotated dims.
extern "C" __global__ void rope_store(float* q, float* k, const float* v, int n_head, int n_head_kv,
                                      int hd, int n_rot, float theta_scale, const int* io, int neox,
                                      const float* ff, float mscale, u16* kc, u16* vc, int n_ctx,
                                      u64 seq_stride, const int* tables, int tlen) {
    grid_wait();
    grid_launch();
    int t = blockIdx.x, hh = blockIdx.y, i = threadIdx.x, half = n_rot / 2;
    int pos = io[3 * t + 1];
    float c = 1.f, s = 0.f;
    int a, b;
    if (i < half) {
        float theta = (float)pos; // as ggml: theta_i = pos * scale^i by repeated products
        for (int j = 0; j < i; j++) theta *= theta_scale;
        if (ff) theta /= ff[i];
        sincosf(theta, &s, &c);
        s *= mscale;
        c *= mscale;
        a = neox ? i : 2 * i;
        b = neox ? i + half : 2 * i + 1;
    } else {
        a = n_rot + 2 * (i - half);
        b = a + 1;
    }
    bool is_q = hh < n_head;
    int kvh = hh - n_head;
    float* p = is_q ? q + ((u64)t * n_head + hh) * hd : k + ((u64)t * n_head_kv + kvh) * hd;
    float x0 = p[a], x1 = p[b];
    float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
    p[a] = y0;
    p[b] = y1;
    if (!is_q) {
        u64 at = kv_at(tables, tlen, seq_stride, io[3 * t + 2], kvh, pos, n_ctx, hd);
        const float* vs = v + ((u64)t * n_head_kv + kvh) * hd;
        kc[at + a] = f2h(y0);
        kc[at + b] = f2h(y1);
        vc[at + a] = f2h(vs[a]);
        vc[at + b] = f2h(vs[b]);
    }
}

// x += y over n values.
extern "C" __global__ void add(float* x, const float* y, int n) {
    grid_wait();
    grid_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] += y[i];
}

// out = x as f16, n values.
extern "C" __global__ void to_f16(const float* x, u16* out, int n) {
    grid_wait();
    grid_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = f2h(x[i]);
}

// RoPE in place of the heads of each row at the row's position (io[3t + 1]): pairs (2i, 2i + 1)
// (ggml's adjacent layout) or, with `neox`, (i, i + n_rot / 2); `ff` (may be null) divides pair
// i's angle. grid (n, n_heads), block n_rot / 2 (one pair per thread).
extern "C" __global__ void rope(float* x, int n_heads, int hd, float theta_scale, const int* io,
                                int neox, const float* ff, float mscale) {
    grid_wait();
    grid_launch();
    int t = blockIdx.x, h = blockIdx.y, i = threadIdx.x, half = blockDim.x;
    float theta = (float)io[3 * t + 1]; // as ggml: theta_i = pos * scale^i by repeated products
    for (int j = 0; j < i; j++) theta *= theta_scale;
    if (ff) theta /= ff[i];
    float s, c;
    sincosf(theta, &s, &c);
    s *= mscale;
    c *= mscale;
    float* p = x + ((u64)t * n_heads + h) * hd;
    int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    float x0 = p[a], x1 = p[b];
    p[a] = x0 * c - x1 * s;
    p[b] = x0 * s + x1 * c;
}

// x[t][i] += b[i] for rows of `dim`, n values in all.
extern "C" __global__ void add_bias(float* x, const float* b, int dim, int n) {
    grid_wait();
    grid_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] += b[i % dim];
}

// x *= s over n values.
extern "C" __global__ void scale(float* x, float s, int n) {
    grid_wait();
    grid_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) x[i] *= s;
}

// g = gelu(g) * u in place (GELU's tanh form on g rounded to f16, the result rounded to f16, as
// ggml's CPU backend computes it from its table), and as f16 into `out` when not null.
extern "C" __global__ void geglu(float* g, const float* u, u16* out, int n, int keep) {
    grid_wait();
    grid_launch();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        float x = g[i], y;
        if (x <= -10.f) {
            y = 0.f;
        } else if (x >= 10.f) {
            y = x;
        } else {
            x = h2f(f2h(x));
            y = h2f(f2h(0.5f * x * (1.f + tanhf(0.7978846f * x * (1.f + 0.044715f * x * x)))));
        }
        y *= u[i];
        if (keep) g[i] = y;
        if (out) out[i] = f2h(y);
    }
}

// k and v of each row as f16 into the layer's cache (see kv_at) of the row's sequence (io[3t + 2])
// at its position (io[3t + 1]). grid (n, n_head_kv), block hd.
extern "C" __global__ void kv_store(const float* k, const float* v, int n_head_kv, int hd,
                                    const int* io, u16* kc, u16* vc, int n_ctx, u64 seq_stride,
                                    const int* tables, int tlen) {
    grid_wait();
    grid_launch();
    int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
    u64 at = kv_at(tables, tlen, seq_stride, io[3 * t + 2], h, io[3 * t + 1], n_ctx, hd) + d;
    u64 src = ((u64)t * n_head_kv + h) * hd + d;
    kc[at] = f2h(k[src]);
    vc[at] = f2h(v[src]);
}

// q rows [t][head][hd] (f32) -> f16 head-major [head][t][hd] (the cuBLAS prompt attention's input).
extern "C" __global__ void rows_to_heads(const float* q, u16* qh, int n, int n_head, int hd) {
    u64 total = (u64)n * n_head * hd;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        u64 t = i / ((u64)n_head * hd), r = i - t * n_head * hd;
        u64 h = r / hd, d = r - h * hd;
        qh[(h * n + t) * hd + d] = f2h(q[i]);
    }
}

// ---------------------------------------------------------------------------------------------
// Decode attention (flash-decoding). Split `split` of the io[0] + 1 cached positions takes `chunk`
// of them (at least 128, so short contexts need no merge); block (kv_head, split, group of <= AD_G
// query heads) walks them in tiles of 32 keys a warp: lane j scores key j against every head of the
// group (queries in shared memory), the warp updates an online softmax per head, then lane d
// accumulates output dims d·E.. over the tile's keys. Warps merge at the end; partials go to
// part[head][split] = (acc[hd], max, sum), and the last block of a head group merges the splits
// into the output (f32 and/or q8_1). `counter` (one int per head group, zero) counts arrivals.
#define AD_WARPS 4
// Query heads a block takes (blockIdx.z picks the group); model.rs's ATTN_HEADS_PER_BLOCK.
#define AD_G 1
// Positions a split takes: at least one pass of the block's 4 warps (128), so contexts up to 128
// need no merge across blocks.
__device__ __forceinline__ int attn_chunk(int n_kv, int n_split) {
    return max(AD_WARPS * 32, (n_kv + n_split - 1) / n_split);
}
template <int HD>
__device__ void attn_decode_t(const float* q, const u16* kc, const u16* vc, const int* io, int n_ctx,
                              u64 seq_stride, const int* tables, int tlen, int n_head, int n_head_kv,
                              float scale, float* part, int* counter, float* of32, i8* aq,
                              float2* ads, int pf, int window) {
    constexpr int E = HD / 32;
    // The first position the query sees: 0, or the start of its sliding window.
    int lo = window > 0 ? max(0, io[1] + 1 - window) : 0;
    const int* tab = kv_table(tables, tlen, io[2]);
    if (!tab) {
        kc += (u64)io[2] * seq_stride;
        vc += (u64)io[2] * seq_stride;
    }
    if (pf) {
        // The cached positions before this one (io is written by the host before the step, so it
        // can be read before the wait) do not depend on the previous kernel: pull this split's keys
        // and values into L2 while it finishes, the blocks of a head group taking turns.
        int n_old = io[1];
        int ch = attn_chunk(n_old + 1 - lo, gridDim.y);
        int p0 = lo + blockIdx.y * ch, p1 = min(n_old, p0 + ch);
        const u8* kb = (const u8*)(kc + (u64)blockIdx.x * n_ctx * HD);
        const u8* vb = (const u8*)(vc + (u64)blockIdx.x * n_ctx * HD);
        constexpr int LINES = (HD * 2 + 127) / 128;
        for (int j = p0 + threadIdx.x * gridDim.z + blockIdx.z; j < p1; j += blockDim.x * gridDim.z) {
#pragma unroll
            for (int l = 0; l < LINES; l++) {
                prefetch_l2(kb + (u64)kv_row(tab, j, n_ctx) * HD * 2 + l * 128);
                prefetch_l2(vb + (u64)kv_row(tab, j, n_ctx) * HD * 2 + l * 128);
            }
        }
    }
    grid_wait();
    grid_launch();
    __shared__ float sq[AD_G][HD];
    __shared__ float sp[AD_WARPS][AD_G][32];
    __shared__ float sm_m[AD_WARPS][AD_G], sm_l[AD_WARPS][AD_G];
    __shared__ float sacc[AD_WARPS][AD_G][HD];
    int kvh = blockIdx.x, split = blockIdx.y, n_split = gridDim.y;
    int group = n_head / n_head_kv;
    int g0 = blockIdx.z * AD_G;
    int ng = min(AD_G, group - g0);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int n_kv = io[1] + 1;
    int chunk = attn_chunk(n_kv - lo, n_split);
    int j0 = lo + split * chunk, j1 = min(n_kv, j0 + chunk);
    if (j0 >= j1) return; // an unused split: takes no ticket, the merge reads only the used ones
    for (int i = threadIdx.x; i < ng * HD; i += blockDim.x) {
        int h = i / HD, d = i - h * HD;
        sq[h][d] = h2f(f2h(q[(u64)(kvh * group + g0 + h) * HD + d])); // rounded as an f16 cache
    }
    __syncthreads();
    float m[AD_G], l[AD_G], acc[AD_G][E];
#pragma unroll
    for (int h = 0; h < AD_G; h++) {
        m[h] = NEG_BIG;
        l[h] = 0.f;
#pragma unroll
        for (int e = 0; e < E; e++) acc[h][e] = 0.f;
    }
    const u16* kb = kc + (u64)kvh * n_ctx * HD;
    const u16* vb = vc + (u64)kvh * n_ctx * HD;
    for (int tile = j0 + warp * 32; tile < j1; tile += AD_WARPS * 32) {
        int j = tile + lane;
        bool valid = j < j1;
        // The row of the lane's key (of the tile's first past the end); the value rows below are
        // the lanes' rows in turn.
        int krow = kv_row(tab, valid ? j : tile, n_ctx);
        // Scores: lane j reads key j whole (all loads first, then the arithmetic).
        uint4 kw[HD / 8];
        const uint4* kr = (const uint4*)(kb + (u64)krow * HD);
#pragma unroll
        for (int d8 = 0; d8 < HD / 8; d8++) kw[d8] = kr[d8];
        float s[AD_G];
#pragma unroll
        for (int h = 0; h < AD_G; h++) s[h] = 0.f;
#pragma unroll
        for (int d8 = 0; d8 < HD / 8; d8++) {
            u32 ws[4] = {kw[d8].x, kw[d8].y, kw[d8].z, kw[d8].w};
            float kf[8];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                kf[2 * i] = h2f((u16)(ws[i] & 0xFFFF));
                kf[2 * i + 1] = h2f((u16)(ws[i] >> 16));
            }
#pragma unroll
            for (int h = 0; h < AD_G; h++) {
                if (h < ng) {
#pragma unroll
                    for (int i = 0; i < 8; i++) s[h] += sq[h][d8 * 8 + i] * kf[i];
                }
            }
        }
#pragma unroll
        for (int h = 0; h < AD_G; h++) {
            if (h < ng) {
                float sc = valid ? s[h] * scale : NEG_BIG;
                float mn = fmaxf(m[h], warp_max(sc));
                float corr = expf(m[h] - mn);
                float p = valid ? expf(sc - mn) : 0.f;
                l[h] = l[h] * corr + warp_sum(p);
#pragma unroll
                for (int e = 0; e < E; e++) acc[h][e] *= corr;
                sp[warp][h][lane] = p;
                m[h] = mn;
            }
        }
        __syncwarp();
        // P·V: lane owns dims lane*E..; the tile's 32 value rows are loaded before the sums.
        int nk = min(32, j1 - tile);
        float vv[32][E];
#pragma unroll
        for (int jj = 0; jj < 32; jj++) {
            int vrow = __shfl_sync(0xffffffffu, krow, jj);
            const u16* vr = vb + (u64)vrow * HD + lane * E;
#pragma unroll
            for (int e = 0; e < E; e++) vv[jj][e] = h2f(vr[e]);
        }
#pragma unroll
        for (int jj = 0; jj < 32; jj++) {
            if (jj < nk) {
#pragma unroll
                for (int h = 0; h < AD_G; h++) {
                    if (h < ng) {
                        float p = sp[warp][h][jj];
#pragma unroll
                        for (int e = 0; e < E; e++) acc[h][e] += p * vv[jj][e];
                    }
                }
            }
        }
        __syncwarp();
    }
#pragma unroll
    for (int h = 0; h < AD_G; h++) {
        if (lane == 0) {
            sm_m[warp][h] = m[h];
            sm_l[warp][h] = l[h];
        }
#pragma unroll
        for (int e = 0; e < E; e++) sacc[warp][h][lane * E + e] = acc[h][e];
    }
    __syncthreads();
    int used = (n_kv - lo + chunk - 1) / chunk;
    if (used == 1) { // the only split: merge the warps straight into the output
        for (int base = 0; base < ng * HD; base += blockDim.x) {
            int idx = base + threadIdx.x;
            if (idx >= ng * HD) break; // whole warps: ng * HD is a multiple of 32
            int h = idx / HD, d = idx - h * HD;
            float mm = NEG_BIG;
            for (int w = 0; w < AD_WARPS; w++) mm = fmaxf(mm, sm_m[w][h]);
            float ll = 0.f, a = 0.f;
            for (int w = 0; w < AD_WARPS; w++) {
                float f = expf(sm_m[w][h] - mm);
                ll += sm_l[w][h] * f;
                a += sacc[w][h][d] * f;
            }
            float o = a / ll;
            u64 e = (u64)(kvh * group + g0 + h) * HD + d;
            if (of32) of32[e] = o;
            if (aq) quant_lane(o, lane, e >> 5, aq, ads);
        }
        return;
    }
    for (int idx = threadIdx.x; idx < ng * HD; idx += blockDim.x) {
        int h = idx / HD, d = idx - h * HD;
        float mm = NEG_BIG;
        for (int w = 0; w < AD_WARPS; w++) mm = fmaxf(mm, sm_m[w][h]);
        float ll = 0.f, a = 0.f;
        for (int w = 0; w < AD_WARPS; w++) {
            float f = expf(sm_m[w][h] - mm);
            ll += sm_l[w][h] * f;
            a += sacc[w][h][d] * f;
        }
        int head = kvh * group + g0 + h;
        float* dst = part + ((u64)head * n_split + split) * (HD + 2);
        dst[d] = a;
        if (d == 0) {
            dst[HD] = mm;
            dst[HD + 1] = ll;
        }
    }
    // The last block of this head group to finish merges the used splits (its partials are
    // published by the fence before each block's ticket) and writes the heads' outputs.
    __shared__ int s_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        int* c = counter + kvh * gridDim.z + blockIdx.z;
        int ticket = atomicAdd(c, 1);
        s_last = ticket == used - 1;
        if (s_last) *c = 0; // every used split has arrived: ready for the next step
    }
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    for (int base = 0; base < ng * HD; base += blockDim.x) {
        int idx = base + threadIdx.x;
        if (idx >= ng * HD) break; // whole warps: ng * HD is a multiple of 32
        int h = idx / HD, d = idx - h * HD;
        int head = kvh * group + g0 + h;
        const volatile float* p = part + (u64)head * n_split * (HD + 2);
        float mm = NEG_BIG, ll = 0.f, a = 0.f;
        for (int sp_i = 0; sp_i < used; sp_i++) {
            float ms = p[sp_i * (HD + 2) + HD], ls = p[sp_i * (HD + 2) + HD + 1];
            float as = p[sp_i * (HD + 2) + d];
            float mn = fmaxf(mm, ms);
            float f0 = expf(mm - mn), f1 = expf(ms - mn);
            ll = ll * f0 + ls * f1;
            a = a * f0 + as * f1;
            mm = mn;
        }
        float o = a / ll;
        u64 e = (u64)head * HD + d;
        if (of32) of32[e] = o;
        if (aq) quant_lane(o, lane, e >> 5, aq, ads);
    }
}
#define ATTN_DECODE(HD)                                                                            \
    extern "C" __global__ void attn_decode_##HD(const float* q, const u16* kc, const u16* vc,    \
                                                const int* io, int n_ctx, u64 seq_stride,         \
                                                const int* tables, int tlen, int n_head,          \
                                                int n_head_kv, float scale, float* part,          \
                                                int* counter, float* of32, i8* aq, float2* ads,   \
                                                int pf, int window) {                             \
        attn_decode_t<HD>(q, kc, vc, io, n_ctx, seq_stride, tables, tlen, n_head, n_head_kv,      \
                          scale, part, counter, of32, aq, ads, pf, window);                       \
    }
ATTN_DECODE(32)
ATTN_DECODE(64)
ATTN_DECODE(96)
ATTN_DECODE(128)
ATTN_DECODE(256)

// ---------------------------------------------------------------------------------------------
// Prompt attention (flash attention on tensor cores, sm_80+): n queries at positions pos0.. of one
// head against the sequence's part of the layer's f16 cache (kv_row: `tab` its block table, or
// null and kc/vc its ring), causal, online softmax in registers; no score matrix in
// memory. Block (query tile of FA_BQ rows, head), 4 warps of 16 rows; the block walks the keys its
// rows see in tiles of BK keys, staged in shared memory (f16, rows padded by 8 halves so the fragment
// loads hit distinct banks). Per tile a warp takes S = Q·Kᵀ (16 × BK) with mma.m16n8k16 (f16 in,
// f32 accumulation), masks and scales it, updates each row's running max and sum, rounds P to f16
// straight from the accumulator registers into A fragments (the m16n8 C layout of two adjacent key
// tiles is the m16k16 A layout) and adds P·V into the 16 × HD output accumulators. The output goes
// as f16 to out[t][head * HD + d], the output projection's input.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, c = lane % 4; a register holds two f16, the lower
// index in the low half): A (16 × 16, row-major) a0 = A[g][2c..], a1 = A[g + 8][2c..],
// a2 = A[g][2c + 8..], a3 = A[g + 8][2c + 8..]; B (16 × 8) b0 = B[2c..2c + 1][g],
// b1 = B[2c + 8..2c + 9][g]; C (16 × 8, f32) c0, c1 = C[g][2c], C[g][2c + 1]; c2, c3 = row g + 8.
#define FA_BQ 64

// c += A·B, one m16n8k16 f16 tensor-core product with f32 accumulators. Only built for sm_80+; the
// host launches the prompt kernels on such cards only (older ones take the cuBLAS path).
__device__ __forceinline__ void mma_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
#if __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};" : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3]) : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}
__device__ __forceinline__ u32 pack_h2(float lo, float hi) {
    return (u32)f2h(lo) | ((u32)f2h(hi) << 16);
}

template <int HD, int BK>
__device__ __forceinline__ void attn_prompt_t(const float* q, const u16* kc, const u16* vc,
                                              const int* tab, int n, int pos0, int n_ctx,
                                              int n_head, int n_head_kv, float scale, float* of32,
                                              u16* of16, int window) {
    constexpr int KS = HD / 16; // k-steps of Q·Kᵀ
    constexpr int DN = HD / 8;  // n-tiles of the output
    constexpr int LD = HD + 8;  // shared row stride in halves (a multiple of 8: rows stay 16-aligned)
    __shared__ __align__(16) u16 ks[BK * LD];
    __shared__ __align__(16) u16 vs[BK * LD];
    int head = blockIdx.y;
    int kvh = head / (n_head / n_head_kv);
    int qt = gridDim.x - 1 - blockIdx.x; // the tiles with the most keys start first
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int g = lane >> 2, c = lane & 3;
    int r0 = qt * FA_BQ + warp * 16; // the warp's first query row
    // Q fragments of rows r0 + g and r0 + g + 8 (rows past n repeat the last row, never stored),
    // rounded to f16 from the f32 rows [t][head][HD].
    u64 stride = (u64)n_head * HD;
    const float* qa = q + (u64)min(r0 + g, n - 1) * stride + head * HD + 2 * c;
    const float* qb = q + (u64)min(r0 + g + 8, n - 1) * stride + head * HD + 2 * c;
    u32 qf[KS][4];
#pragma unroll
    for (int k = 0; k < KS; k++) {
        float2 a0 = *(const float2*)(qa + k * 16), b0 = *(const float2*)(qb + k * 16);
        float2 a1 = *(const float2*)(qa + k * 16 + 8), b1 = *(const float2*)(qb + k * 16 + 8);
        qf[k][0] = pack_h2(a0.x, a0.y);
        qf[k][1] = pack_h2(b0.x, b0.y);
        qf[k][2] = pack_h2(a1.x, a1.y);
        qf[k][3] = pack_h2(b1.x, b1.y);
    }
    float o[DN][4];
#pragma unroll
    for (int d = 0; d < DN; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float m0 = NEG_BIG, m1 = NEG_BIG, l0 = 0.f, l1 = 0.f;
    int lim0 = pos0 + r0 + g, lim1 = lim0 + 8; // the last key each of the thread's rows sees
    // The first key each row sees (a sliding window's start), and the block's first tile.
    int lo0 = window > 0 ? lim0 - window + 1 : 0, lo1 = window > 0 ? lim1 - window + 1 : 0;
    int kbeg = window > 0 ? max(0, pos0 + qt * FA_BQ - window + 1) / BK * BK : 0;
    int n_kv = pos0 + n;
    int kend = min(n_kv, pos0 + qt * FA_BQ + FA_BQ); // keys kbeg..kend serve the block's rows
    const u16* kb = kc + (u64)kvh * n_ctx * HD;
    const u16* vb = vc + (u64)kvh * n_ctx * HD;
    const float sl = scale * 1.4426950409f; // scores in log2 units: exp2f below
    for (int k0 = kbeg; k0 < kend; k0 += BK) {
        __syncthreads(); // the previous tile is consumed
        for (int i = threadIdx.x; i < BK * HD / 8; i += blockDim.x) {
            int key = i / (HD / 8), c8 = i - key * (HD / 8);
            uint4 kw = make_uint4(0, 0, 0, 0), vw = make_uint4(0, 0, 0, 0);
            if (k0 + key < n_kv) { // zeros past the cached keys (never garbage: 0 · NaN is NaN)
                int row = kv_row(tab, k0 + key, n_ctx);
                kw = ((const uint4*)(kb + (u64)row * HD))[c8];
                vw = ((const uint4*)(vb + (u64)row * HD))[c8];
            }
            *(uint4*)(ks + key * LD + c8 * 8) = kw;
            *(uint4*)(vs + key * LD + c8 * 8) = vw;
        }
        __syncthreads();
        // No row of this warp sees a key of the tile, or the warp's rows are all past n.
        if (k0 > pos0 + r0 + 15 || r0 >= n) continue;
        float s[BK / 8][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int k = 0; k < KS; k++) {
                const u16* kr = ks + (j * 8 + g) * LD + k * 16 + 2 * c;
                mma_16816(s[j], qf[k][0], qf[k][1], qf[k][2], qf[k][3], *(const u32*)kr,
                          *(const u32*)(kr + 8));
            }
        }
        float mx0 = NEG_BIG, mx1 = NEG_BIG;
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int key = k0 + j * 8 + 2 * c + e;
                s[j][e] = key <= lim0 && key >= lo0 ? s[j][e] * sl : NEG_BIG;
                s[j][2 + e] = key <= lim1 && key >= lo1 ? s[j][2 + e] * sl : NEG_BIG;
                mx0 = fmaxf(mx0, s[j][e]);
                mx1 = fmaxf(mx1, s[j][2 + e]);
            }
        }
        // The four lanes of a row group hold its columns.
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
        mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
        mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
        // A masked score gives probability 0 even while its row has seen no key yet (a sliding
        // window's row in a tile before its window: max still NEG_BIG); a fully masked row of a
        // later tile keeps its max (factor 1, probabilities 0).
        float mn0 = fmaxf(m0, mx0), mn1 = fmaxf(m1, mx1);
        float f0 = exp2f(m0 - mn0), f1 = exp2f(m1 - mn1);
        m0 = mn0;
        m1 = mn1;
        l0 *= f0;
        l1 *= f1;
#pragma unroll
        for (int d = 0; d < DN; d++) {
            o[d][0] *= f0;
            o[d][1] *= f0;
            o[d][2] *= f1;
            o[d][3] *= f1;
        }
        // P as A fragments: key tile j = 2kk gives a0 (row g) and a1 (row g + 8), j = 2kk + 1 a2, a3.
        u32 pf[BK / 16][4];
#pragma unroll
        for (int j = 0; j < BK / 8; j++) {
            float p00 = s[j][0] == NEG_BIG ? 0.f : exp2f(s[j][0] - mn0);
            float p01 = s[j][1] == NEG_BIG ? 0.f : exp2f(s[j][1] - mn0);
            float p10 = s[j][2] == NEG_BIG ? 0.f : exp2f(s[j][2] - mn1);
            float p11 = s[j][3] == NEG_BIG ? 0.f : exp2f(s[j][3] - mn1);
            l0 += p00 + p01;
            l1 += p10 + p11;
            pf[j >> 1][(j & 1) * 2] = pack_h2(p00, p01);
            pf[j >> 1][(j & 1) * 2 + 1] = pack_h2(p10, p11);
        }
#pragma unroll
        for (int kk = 0; kk < BK / 16; kk++) {
#pragma unroll
            for (int d = 0; d < DN; d++) {
                // B = V[keys kk·16..][dims d·8..]: b0 = keys 2c, 2c + 1 of dim g; b1 = keys + 8.
                const u16* vr = vs + (kk * 16 + 2 * c) * LD + d * 8 + g;
                u32 b0 = (u32)vr[0] | ((u32)vr[LD] << 16);
                u32 b1 = (u32)vr[8 * LD] | ((u32)vr[9 * LD] << 16);
                mma_16816(o[d], pf[kk][0], pf[kk][1], pf[kk][2], pf[kk][3], b0, b1);
            }
        }
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    float i0 = 1.f / l0, i1 = 1.f / l1;
    int ta = r0 + g, tb = r0 + g + 8;
#pragma unroll
    for (int d = 0; d < DN; d++) {
        int col = head * HD + d * 8 + 2 * c;
        float2 ya = make_float2(o[d][0] * i0, o[d][1] * i0), yb = make_float2(o[d][2] * i1, o[d][3] * i1);
        if (ta < n) {
            if (of32) *(float2*)(of32 + (u64)ta * stride + col) = ya;
            if (of16) *(u32*)(of16 + (u64)ta * stride + col) = pack_h2(ya.x, ya.y);
        }
        if (tb < n) {
            if (of32) *(float2*)(of32 + (u64)tb * stride + col) = yb;
            if (of16) *(u32*)(of16 + (u64)tb * stride + col) = pack_h2(yb.x, yb.y);
        }
    }
}
// Key tiles of 64 (32 for 256-wide heads, whose staged tiles would not fit 48 KiB of shared memory).
#define ATTN_PROMPT(HD, BK)                                                                        \
    extern "C" __global__ void __launch_bounds__(128)                                              \
        attn_prompt_##HD(const float* q, const u16* kc, const u16* vc, const int* tab, int n,   \
                         int pos0, int n_ctx, int n_head, int n_head_kv, float scale, float* of32, \
                         u16* of16, int window) {                                                  \
        attn_prompt_t<HD, BK>(q, kc, vc, tab, n, pos0, n_ctx, n_head, n_head_kv, scale, of32,     \
                              of16, window);                                                       \
    }
ATTN_PROMPT(32, 64)
ATTN_PROMPT(64, 64)
ATTN_PROMPT(96, 64)
ATTN_PROMPT(128, 64)
ATTN_PROMPT(256, 32)

// Prompt attention without tensor cores (cards before sm_80, or the flash option off), between
// two batched GEMMs: scores s (rows = head-major (head, t), n_kv
// columns) -> probabilities p (f16), causal: row t sees positions 0..=pos0 + t.
extern "C" __global__ void softmax_causal(const float* s, u16* p, int n, int n_kv, int pos0, float scale) {
    __shared__ float red[32];
    u64 r = blockIdx.x;
    int t = (int)(r % n);
    int seen = pos0 + t + 1;
    const float* sr = s + r * n_kv;
    u16* pr = p + r * n_kv;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    float mx = NEG_BIG;
    for (int j = threadIdx.x; j < seen; j += blockDim.x) mx = fmaxf(mx, sr[j] * scale);
    mx = warp_max(mx);
    if (lane == 0) red[warp] = mx;
    __syncthreads();
    if (warp == 0) {
        float v = lane < nw ? red[lane] : NEG_BIG;
        v = warp_max(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    mx = red[0];
    __syncthreads();
    float sum = 0.f;
    for (int j = threadIdx.x; j < seen; j += blockDim.x) sum += expf(sr[j] * scale - mx);
    sum = warp_sum(sum);
    if (lane == 0) red[warp] = sum;
    __syncthreads();
    if (warp == 0) {
        float v = lane < nw ? red[lane] : 0.f;
        v = warp_sum(v);
        if (lane == 0) red[0] = v;
    }
    __syncthreads();
    float inv = 1.f / red[0];
    for (int j = threadIdx.x; j < n_kv; j += blockDim.x)
        pr[j] = j < seen ? f2h(expf(sr[j] * scale - mx) * inv) : (u16)0;
}

// o[head][t][hd] -> att[t][head * hd] (f16), the output projection's input.
extern "C" __global__ void heads_to_rows(const u16* o, u16* att, int n, int n_head, int hd) {
    u64 total = (u64)n * n_head * hd;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        int d = (int)(i % hd);
        u64 th = i / hd;
        int h = (int)(th % n_head);
        u64 t = th / n_head;
        att[i] = o[((u64)h * n + t) * hd + d];
    }
}

// Index of the largest of n values (the first on ties) -> out[0]. One block of 1024 threads.
extern "C" __global__ void argmax(const float* x, int n, int* out) {
    __shared__ float sv[1024];
    __shared__ int si[1024];
    float best = -3.4e38f;
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = x[i];
        if (v > best) { best = v; bi = i; }
    }
    sv[threadIdx.x] = best;
    si[threadIdx.x] = bi;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float v = sv[threadIdx.x + s];
            int i = si[threadIdx.x + s];
            if (v > sv[threadIdx.x] || (v == sv[threadIdx.x] && i < si[threadIdx.x])) {
                sv[threadIdx.x] = v;
                si[threadIdx.x] = i;
            }
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) out[0] = si[0];
}

// ---- Prompt matmuls straight from the quantized weights (sm_80+) ----
// out[t][r] (+)= Σ_c x[t][c] · W[r][c] for n rows of f16 activations x and a weight W in its GGUF
// block format. A block of 256 threads owns QG_BN weight rows × TM tokens; per step of QG_BK
// columns it copies the activations into shared memory (cp.async) and decodes the weights into an
// f16 tile there (each thread 16 consecutive weights of one row), both double-buffered: the next
// step's raw weight bytes are loaded into registers before the current step's products and
// decoded after them. The products are m16n8k16 tensor-core MMAs (f16 in, f32 accumulation), the
// activation rows as A (tokens × columns) and the weight rows as B, so each thread's accumulator
// pairs are two adjacent outputs of one token. No dequantized copy of the weight is written.
#define QG_BN 128
#define QG_BK 32
#define QG_LD 40 // shared row stride in halves: 80 bytes, so the 8 row addresses of an ldmatrix hit distinct banks
#define T_ANY (-1)

__device__ __forceinline__ u32 smem_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
// Until at most N groups of copies are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}
__device__ __forceinline__ void ldmatrix4(u32* r, const u16* p) {
#if __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_addr(p)));
#endif
}
// Byte i (0..15) of four words, i known per thread.
__device__ __forceinline__ int byte16(const u32* w, int i) {
    u32 v = i < 4 ? w[0] : i < 8 ? w[1] : i < 12 ? w[2] : w[3];
    return (int)((v >> (8 * (i & 3))) & 255u);
}

// The raw bytes of 16 weights of one row from column `col` (a multiple of 16), loaded without
// being used, and their decoding into 8 f16 pairs.
struct QgRaw {
    u32 w[10];
};
// Loads as volatile asm: the compiler keeps them where they are written (two column steps before
// their use) instead of sinking them next to it, which exposed the full load latency every step.
__device__ __forceinline__ uint4 ldg16(const void* p) {
    uint4 v;
    asm volatile("ld.global.nc.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
__device__ __forceinline__ u32 ldg2(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.u16 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
__device__ __forceinline__ u32 ldg1(const void* p) {
    u32 v;
    asm volatile("ld.global.nc.u8 %0, [%1];" : "=r"(v) : "l"(p));
    return v;
}
template <int T>
__device__ __forceinline__ void qg_load(const u8* row, int col, QgRaw& r) {
    if (T == T_F16) {
        uint4 a = ldg16(row + col * 2), b = ldg16(row + col * 2 + 16);
        r.w[0] = a.x; r.w[1] = a.y; r.w[2] = a.z; r.w[3] = a.w;
        r.w[4] = b.x; r.w[5] = b.y; r.w[6] = b.z; r.w[7] = b.w;
    } else if (T == T_Q4_0 || T == T_Q8_0) {
        // 18- / 34-byte blocks are only 2-byte aligned: the 16 code bytes as 8 halves.
        const u8* b = row + (col >> 5) * (T == T_Q4_0 ? 18 : 34);
        const u8* q = b + 2 + (T == T_Q8_0 ? (col & 16) : 0);
#pragma unroll
        for (int i = 0; i < 8; i++) r.w[i] = ldg2(q + 2 * i);
        r.w[8] = ldg2(b);
    } else if (T == T_Q4_K) {
        const u8* b = row + (col >> 8) * 144;
        uint4 h = ldg16(b);                                  // d, dmin, 12 scale bytes
        uint4 q = ldg16(b + 16 + ((col & 255) >> 6) * 32 + (col & 16));
        r.w[0] = h.x; r.w[1] = h.y; r.w[2] = h.z; r.w[3] = h.w;
        r.w[4] = q.x; r.w[5] = q.y; r.w[6] = q.z; r.w[7] = q.w;
    } else if (T == T_Q6_KP) {
        const u8* b = row + (col >> 8) * 224;
        int c = col & 255, h = c >> 7, k = (c & 127) >> 5, l0 = col & 16;
        uint4 ql = ldg16(b + h * 64 + l0 + (k & 1) * 32);
        uint4 qh = ldg16(b + 128 + h * 32 + l0);
        r.w[0] = ql.x; r.w[1] = ql.y; r.w[2] = ql.z; r.w[3] = ql.w;
        r.w[4] = qh.x; r.w[5] = qh.y; r.w[6] = qh.z; r.w[7] = qh.w;
        r.w[8] = ldg1(b + 192 + h * 8 + (l0 >> 4) + 2 * k);
        r.w[9] = ldg2(b + 208);
    }
}

// f16x2 arithmetic and byte shuffles for the decoding: a byte b (< 1024) placed under the
// exponent bits 0x64 is the half 1024 + b, so four codes become two f16 pairs with two byte
// permutes, and one f16x2 subtraction makes them exact small integers (as in the mixed-precision
// GEMMs of Marlin or FasterTransformer) instead of an int-to-float conversion per value.
__device__ __forceinline__ u32 prmt(u32 a, u32 b, u32 sel) {
    u32 r;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(sel));
    return r;
}
__device__ __forceinline__ u32 hsub2(u32 a, u32 b) {
    u32 r;
    asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 hmul2(u32 a, u32 b) {
    u32 r;
    asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
    return r;
}
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
    u32 r;
    asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
}
// Bytes 0, 1 and 2, 3 of w as (1024 + b0, 1024 + b1) and (1024 + b2, 1024 + b3).
__device__ __forceinline__ void bytes_h2(u32 w, u32& lo, u32& hi) {
    lo = prmt(w, 0x64646464u, 0x5140);
    hi = prmt(w, 0x64646464u, 0x5342);
}
// Four byte codes (minus the half pair `bias` = 1024 + offset) times the pair `d`, plus `c`
// when given: values 4i..4i + 3 of the 16.
__device__ __forceinline__ void codes4(u32 w, u32 bias, u32 d, u32 c, bool fma, u32* o) {
    u32 lo, hi;
    bytes_h2(w, lo, hi);
    lo = hsub2(lo, bias);
    hi = hsub2(hi, bias);
    o[0] = fma ? hfma2(lo, d, c) : hmul2(lo, d);
    o[1] = fma ? hfma2(hi, d, c) : hmul2(hi, d);
}
__device__ __forceinline__ u32 h2dup(u16 h) { return (u32)h | ((u32)h << 16); }

template <int T>
__device__ __forceinline__ void qg_decode(const QgRaw& r, int t, const u8* row, int col, u32* o) {
    if (T == T_F16) {
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] = r.w[i];
    } else if (T == T_Q4_0 || T == T_Q8_0) {
        u32 d = h2dup((u16)r.w[8]);
        int sh = T == T_Q4_0 && (col & 16) ? 4 : 0; // Q4_0 columns 16..31: the high nibbles
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 w = r.w[2 * i] | (r.w[2 * i + 1] << 16);
            // Q4_0: q - 8 for nibbles q; Q8_0: signed bytes, shifted to unsigned by 128.
            w = T == T_Q4_0 ? (w >> sh) & 0x0F0F0F0Fu : w ^ 0x80808080u;
            codes4(w, T == T_Q4_0 ? 0x64086408u : 0x64806480u, d, 0, false, o + 2 * i);
        }
    } else if (T == T_Q4_K) {
        int sub = ((col & 255) >> 6) * 2 + ((col & 32) ? 1 : 0);
        const u32* s = r.w + 1; // the 12 scale bytes
        int sc, m;
        scale_min_k4_of(sub, [s](int i) { return byte16(s, i); }, &sc, &m);
        float d = h2f((u16)r.w[0]) * (float)sc, mn = h2f((u16)(r.w[0] >> 16)) * (float)m;
        u32 d2 = h2dup(f2h(d)), m2 = h2dup(f2h(-mn));
        int sh = col & 32 ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 4; i++) codes4((r.w[4 + i] >> sh) & 0x0F0F0F0Fu, 0x64006400u, d2, m2, true, o + 2 * i);
    } else if (T == T_Q6_KP) {
        int k = ((col & 255) & 127) >> 5;
        int sh = k >= 2 ? 4 : 0;
        u32 d2 = h2dup(f2h(h2f((u16)r.w[9]) * (float)(i8)r.w[8]));
#pragma unroll
        for (int i = 0; i < 4; i++) {
            u32 q = ((r.w[i] >> sh) & 0x0F0F0F0Fu) | (((r.w[4 + i] >> (2 * k)) & 0x03030303u) << 4);
            codes4(q, 0x64206420u, d2, 0, false, o + 2 * i); // 6-bit codes minus 32
        }
    } else { // any other format, element by element
#pragma unroll
        for (int i = 0; i < 8; i++) o[i] = pack_h2(dq(t, row, col + 2 * i), dq(t, row, col + 2 * i + 1));
    }
}

// Column steps of activations in flight (cp.async stages), and the shared memory of a block.
#define QG_XS 3
__host__ __device__ constexpr int qg_smem(int tm) { return (QG_XS * tm + 2 * QG_BN) * QG_LD * 2; }

__device__ __forceinline__ void qg_store(u16* ws, int wrow, int half, const u32* d) {
    *(uint4*)&ws[wrow * QG_LD + half * 16] = make_uint4(d[0], d[1], d[2], d[3]);
    *(uint4*)&ws[wrow * QG_LD + half * 16 + 8] = make_uint4(d[4], d[5], d[6], d[7]);
}

// A warp's accumulators (MT m16 token tiles x NT n8 row tiles from token tok0, row row0) into
// out[tok][row] (added to what is there with `add`); tokens past n and rows past `rows` dropped.
template <int MT, int NT>
__device__ __forceinline__ void qg_epilogue(float (&acc)[MT][NT][4], float* out, int rows, int n,
                                            int tok0, int row0, int add) {
    int lane = threadIdx.x & 31, g = lane >> 2, c = lane & 3;
    bool pairs = (rows & 1) == 0;
#pragma unroll
    for (int i = 0; i < MT; i++) {
#pragma unroll
        for (int j = 0; j < NT; j++) {
            int r = row0 + j * 8 + 2 * c;
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int tok = tok0 + i * 16 + g + e * 8;
                if (tok >= n || r >= rows) continue;
                float* o = out + (u64)tok * rows + r;
                float v0 = acc[i][j][2 * e], v1 = acc[i][j][2 * e + 1];
                if (pairs) {
                    float2 y = make_float2(v0, v1);
                    if (add) {
                        float2 p = *(const float2*)o;
                        y.x += p.x;
                        y.y += p.y;
                    }
                    *(float2*)o = y;
                } else {
                    o[0] = add ? o[0] + v0 : v0;
                    if (r + 1 < rows) o[1] = add ? o[1] + v1 : v1;
                }
            }
        }
    }
}

// The pipeline, at column step kt: the activations of step kt + 2 are copied (cp.async, QG_XS
// stages), the products of step kt run on its shared tiles, the raw weights of step kt + 1
// (loaded two steps earlier) are decoded into the other weight tile, and that register set is
// reloaded with step kt + 3. The loop is unrolled by two so each register set has a fixed name.
template <int T, int TM>
__device__ __forceinline__ void qgemm_t(const u8* w, int t, int rows, int cols, const u16* x, int n,
                                        float* out, int add) {
    constexpr int MT = TM / 32; // m16 tiles of a warp: the warps are 2 (tokens) × 4 (rows)
    extern __shared__ __align__(16) u16 qg_sh[];
    u16* xs = qg_sh;                      // QG_XS × TM × QG_LD
    u16* ws = qg_sh + QG_XS * TM * QG_LD; // 2 × QG_BN × QG_LD
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int r0 = blockIdx.x * QG_BN, t0 = blockIdx.y * TM;
    int wt = (warp >> 2) * (TM / 2), wr = (warp & 3) * 32; // the warp's tokens and rows in the tile
    u64 rb = row_bytes(t, cols);
    // This thread's 16 weights per step: row wrow, columns 16·half.. of the step.
    int wrow = tid >> 1, half = tid & 1;
    const u8* wp = w + (u64)min(r0 + wrow, rows - 1) * rb;
    // Its activation chunks: 16 bytes each, TM rows × 4 chunks a step.
    const u16* xp[TM / 64];
    int xo[TM / 64];
#pragma unroll
    for (int j = 0; j < TM / 64; j++) {
        int i = tid + j * 256;
        xp[j] = x + (u64)min(t0 + (i >> 2), n - 1) * cols + (i & 3) * 8;
        xo[j] = (i >> 2) * QG_LD + (i & 3) * 8;
    }
    auto copy_x = [&](int kt) {
        if (kt < cols / QG_BK) {
            u16* dst = xs + (kt % QG_XS) * TM * QG_LD;
#pragma unroll
            for (int j = 0; j < TM / 64; j++) cp_async16(dst + xo[j], xp[j] + kt * QG_BK);
        }
        cp_async_commit(); // an empty group past the end keeps the count
    };
    float acc[MT][4][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
    int nk = cols / QG_BK;
    QgRaw ra, rb2;
    u32 dec[8];
    copy_x(0);
    copy_x(1);
    qg_load<T>(wp, half * 16, ra);
    qg_decode<T>(ra, t, wp, half * 16, dec);
    qg_store(ws, wrow, half, dec);
    if (nk > 1) qg_load<T>(wp, QG_BK + half * 16, rb2);
    if (nk > 2) qg_load<T>(wp, 2 * QG_BK + half * 16, ra);
    cp_async_wait<1>();
    __syncthreads();
    auto step = [&](int kt, QgRaw& raw) {
        copy_x(kt + 2);
        const u16* xc = xs + (kt % QG_XS) * TM * QG_LD;
        const u16* wc = ws + (kt & 1) * QG_BN * QG_LD;
#pragma unroll
        for (int ks = 0; ks < QG_BK / 16; ks++) {
            u32 a[MT][4], b[2][4];
#pragma unroll
            for (int i = 0; i < MT; i++)
                ldmatrix4(a[i], xc + (wt + i * 16 + (lane & 15)) * QG_LD + ks * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int j = 0; j < 2; j++)
                ldmatrix4(b[j], wc + (wr + j * 16 + (lane >> 4) * 8 + (lane & 7)) * QG_LD + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    mma_16816(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j >> 1][(j & 1) * 2],
                              b[j >> 1][(j & 1) * 2 + 1]);
        }
        if (kt + 1 < nk) {
            int col = (kt + 1) * QG_BK + half * 16;
            qg_decode<T>(raw, t, wp, col, dec);
            qg_store(ws + ((kt + 1) & 1) * QG_BN * QG_LD, wrow, half, dec);
        }
        if (kt + 3 < nk) qg_load<T>(wp, (kt + 3) * QG_BK + half * 16, raw);
        cp_async_wait<1>();
        __syncthreads();
    };
    for (int kt = 0; kt < nk; kt += 2) {
        step(kt, rb2); // decodes step kt + 1 (set B), loads kt + 3 into it
        if (kt + 1 < nk) step(kt + 1, ra);
    }
    qg_epilogue<MT, 4>(acc, out, rows, n, t0 + wt, r0 + wr, add);
}
// One kernel per format (T_ANY: the rest, element by element) and token tile (64 or 128). The
// super-block kernels below take the same parameters (`t` unused: the format is in the name).
// One block a multiprocessor: bounds of (256, 2) (128 registers) measured no faster on an H200
// (bench/cuda/NOTES.md).
#define QGEMM(NAME, T, TM)                                                                          \
    extern "C" __global__ void __launch_bounds__(256, 1)                                           \
        qgemm_##NAME##_##TM(const u8* w, int t, int rows, int cols, const u16* x, int n,           \
                            float* out, int add) {                                                 \
        qgemm_t<T, TM>(w, t, rows, cols, x, n, out, add);                                          \
    }
QGEMM(f16, T_F16, 64)
QGEMM(f16, T_F16, 128)
QGEMM(q4_0, T_Q4_0, 64)
QGEMM(q4_0, T_Q4_0, 128)
QGEMM(q8_0, T_Q8_0, 64)
QGEMM(q8_0, T_Q8_0, 128)
QGEMM(q4_k, T_Q4_K, 64)
QGEMM(q4_k, T_Q4_K, 128)
QGEMM(q6_k, T_Q6_KP, 64)
QGEMM(q6_k, T_Q6_KP, 128)
QGEMM(any, T_ANY, 64)
QGEMM(any, T_ANY, 128)

// ---- The prompt matmul for K-quant weights, v4: whole super-blocks staged, 64x64 warp tiles ----
// A block of 128 threads (4 warps, 2 x 2) owns 128 tokens x 128 weight rows; each warp a 64 x 64
// tile, so every A and B fragment feeds eight or four MMAs (a 64x32 tile reloads A per 32 rows).
// The raw weight bytes go to shared memory a whole super-block (256 columns) per row at a time,
// by cp.async in contiguous 16-byte chunks (not 16-byte pieces of 16 rows per load), double-
// buffered a super-block ahead; every 32-column step each thread decodes its row's sub-block from
// there into the f16 tile. Activations as in qgemm_t (three cp.async stages).
#define Q4_BT 128
#define Q4_BN 128
// Bytes of a super-block, and its row stride in shared memory (Q6_K's 224 bytes = 14 chunks of 16
// would put rows t and t + 4 in the same banks; 240 = 15 chunks does not).
__host__ __device__ constexpr int qg4_sb(int t) { return t == T_Q4_K ? 144 : 224; }
__host__ __device__ constexpr int qg4_stride(int t) { return t == T_Q4_K ? 144 : 240; }
__host__ __device__ constexpr int qg4_smem(int t) {
    return (3 * Q4_BT + 2 * Q4_BN) * QG_LD * 2 + 2 * Q4_BN * qg4_stride(t);
}

// Sub-block s (32 columns) of one row's super-block at `rp` (shared) -> 16 f16 pairs.
template <int T>
__device__ __forceinline__ void qg4_decode(const u8* rp, int s, u32* o) {
    if (T == T_Q4_K) {
        int sc, m;
        scale_min_k4(s, rp + 4, &sc, &m);
        float d = ldh(rp) * (float)sc, mn = ldh(rp + 2) * (float)m;
        u32 d2 = h2dup(f2h(d)), m2 = h2dup(f2h(-mn));
        int sh = (s & 1) * 4;
        const uint4* q = (const uint4*)(rp + 16 + (s >> 1) * 32);
#pragma unroll
        for (int v = 0; v < 2; v++) {
            uint4 c = q[v];
            u32 cw[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
            for (int i = 0; i < 4; i++)
                codes4((cw[i] >> sh) & 0x0F0F0F0Fu, 0x64006400u, d2, m2, true, o + 8 * v + 2 * i);
        }
    } else { // T_Q6_KP
        int h = s >> 2, k = s & 3, sh = k >= 2 ? 4 : 0;
        const uint4* ql = (const uint4*)(rp + h * 64 + (k & 1) * 32);
        const uint4* qh = (const uint4*)(rp + 128 + h * 32);
        float d = h2f(*(const u16*)(rp + 208));
#pragma unroll
        for (int v = 0; v < 2; v++) {
            u32 d2 = h2dup(f2h(d * (float)(i8)rp[192 + h * 8 + v + 2 * k]));
            uint4 l = ql[v], hb = qh[v];
            u32 lw[4] = {l.x, l.y, l.z, l.w}, hw[4] = {hb.x, hb.y, hb.z, hb.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                u32 q = ((lw[i] >> sh) & 0x0F0F0F0Fu) | (((hw[i] >> (2 * k)) & 0x03030303u) << 4);
                codes4(q, 0x64206420u, d2, 0, false, o + 8 * v + 2 * i);
            }
        }
    }
}

template <int T>
__device__ __forceinline__ void qgemm4_t(const u8* w, int rows, int cols, const u16* x, int n,
                                         float* out, int add) {
    constexpr int SB = qg4_sb(T), NCH = SB / 16, SS = qg4_stride(T);
    extern __shared__ __align__(16) u16 qg_sh[];
    u16* xs = qg_sh;                                  // 3 × Q4_BT × QG_LD
    u16* wd = xs + 3 * Q4_BT * QG_LD;                 // 2 × Q4_BN × QG_LD
    u8* raw = (u8*)(wd + 2 * Q4_BN * QG_LD);          // 2 × Q4_BN × SS
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    int r0 = blockIdx.x * Q4_BN, t0 = blockIdx.y * Q4_BT;
    int wt = (warp >> 1) * 64, wr = (warp & 1) * 64;
    u64 rb = (u64)(cols / 256) * SB;
    int nk = cols / QG_BK, nsb = cols / 256;
    const u16* xp[4];
    int xo[4];
#pragma unroll
    for (int j = 0; j < 4; j++) {
        int i = tid + j * 128;
        xp[j] = x + (u64)min(t0 + (i >> 2), n - 1) * cols + (i & 3) * 8;
        xo[j] = (i >> 2) * QG_LD + (i & 3) * 8;
    }
    auto copy_x = [&](int kt) {
        if (kt < nk) {
            u16* dst = xs + (kt % 3) * Q4_BT * QG_LD;
#pragma unroll
            for (int j = 0; j < 4; j++) cp_async16(dst + xo[j], xp[j] + kt * QG_BK);
        }
        cp_async_commit();
    };
    // Super-block sb of every row of the tile into raw buffer sb & 1, in contiguous chunks.
    auto copy_raw = [&](int sb) {
        if (sb < nsb) {
            u8* dst = raw + (sb & 1) * Q4_BN * SS;
#pragma unroll
            for (int j = 0; j < NCH; j++) {
                int i = tid + j * 128, row = i / NCH, k = i - row * NCH;
                const u8* src = w + (u64)min(r0 + row, rows - 1) * rb + (u64)sb * SB + k * 16;
                cp_async16(dst + row * SS + k * 16, src);
            }
        }
        cp_async_commit();
    };
    // This thread decodes row tid of the tile.
    auto decode = [&](int kt) {
        u32 o[16];
        qg4_decode<T>(raw + ((kt >> 3) & 1) * Q4_BN * SS + tid * SS, kt & 7, o);
        uint4* dst = (uint4*)(wd + (kt & 1) * Q4_BN * QG_LD + tid * QG_LD);
#pragma unroll
        for (int v = 0; v < 4; v++) dst[v] = make_uint4(o[4 * v], o[4 * v + 1], o[4 * v + 2], o[4 * v + 3]);
    };
    float acc[4][8][4];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;
    copy_raw(0);
    copy_x(0);
    copy_x(1);
    copy_raw(1);
    cp_async_wait<0>();
    __syncthreads();
    decode(0);
    __syncthreads();
    for (int kt = 0; kt < nk; kt++) {
        bool sb_start = (kt & 7) == 0 && kt > 0;
        copy_x(kt + 2);
        if (sb_start) copy_raw((kt >> 3) + 1); // the buffer of super-block kt/8 - 1 is free now
        const u16* xc = xs + (kt % 3) * Q4_BT * QG_LD;
        const u16* wc = wd + (kt & 1) * Q4_BN * QG_LD;
#pragma unroll
        for (int ks = 0; ks < QG_BK / 16; ks++) {
            u32 a[4][4], b[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++)
                ldmatrix4(a[i], xc + (wt + i * 16 + (lane & 15)) * QG_LD + ks * 16 + (lane >> 4) * 8);
#pragma unroll
            for (int j = 0; j < 4; j++)
                ldmatrix4(b[j], wc + (wr + j * 16 + (lane >> 4) * 8 + (lane & 7)) * QG_LD + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 8; j++)
                    mma_16816(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j >> 1][(j & 1) * 2],
                              b[j >> 1][(j & 1) * 2 + 1]);
        }
        if (kt + 1 < nk) decode(kt + 1);
        // Activations of step kt + 1 in place; a super-block's raw copy may stay in flight one
        // step longer (it is needed eight steps later).
        if (sb_start) cp_async_wait<2>();
        else cp_async_wait<1>();
        __syncthreads();
    }
    qg_epilogue<4, 8>(acc, out, rows, n, t0 + wt, r0 + wr, add);
}
extern "C" __global__ void __launch_bounds__(128, 2)
    qgemm4_q4_k(const u8* w, int t, int rows, int cols, const u16* x, int n, float* out, int add) {
    qgemm4_t<T_Q4_K>(w, rows, cols, x, n, out, add);
}
extern "C" __global__ void __launch_bounds__(128, 2)
    qgemm4_q6_k(const u8* w, int t, int rows, int cols, const u16* x, int n, float* out, int add) {
    qgemm4_t<T_Q6_KP>(w, rows, cols, x, n, out, add);
}
