// The parameters and bindings of the prompt matmuls (matmul.wgsl, matmul_tile.wgsl), which
// fused.rs's `matmul_group` fills alike for both (the decode mat-vec takes the same words).
struct Params {
    cols: u32,
    n: u32,
    mode: u32,
    groups: u32, // rows over the grid: rows0 in mode 2 (gate and up rows together), else rows0 + rows1 + rows2
    rows0: u32,
    rows1: u32,
    rows2: u32,
    rpw: u32, // rows a workgroup: the mat-vec's; 1 for matmul.wgsl, 64 (32 in mode 2) for matmul_tile.wgsl (unused by both)
    eps: f32, // the mat-vec's (unused here)
    stride0: u32, // values a row of out0 and res holds (rows0 unless W_0 is a part)
    off0: u32, // out0's column of W_0's first row (0 unless W_0 is a part)
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w0: array<u32>; // (rows0, blocks of the row)
@group(0) @binding(2) var<storage, read> w1: array<u32>;
@group(0) @binding(3) var<storage, read> w2: array<u32>;
@group(0) @binding(4) var<storage, read> x: array<vec4<f32>>; // (n, cols / 4)
@group(0) @binding(5) var<storage, read_write> out0: array<f32>; // (n, stride0)
@group(0) @binding(6) var<storage, read_write> out1: array<f32>; // (n, rows1)
@group(0) @binding(7) var<storage, read_write> out2: array<f32>; // (n, rows2)
@group(0) @binding(8) var<storage, read_write> res: array<f32>;  // (n, stride0)
