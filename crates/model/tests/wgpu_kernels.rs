//! Every wgpu kernel against the CPU scalar reference on fresh random inputs, on whatever Vulkan
//! (or Metal) adapter is present (lavapipe in CI), with and without subgroup operations; and every
//! shader translated to Metal Shading Language by naga.
#![cfg(feature = "wgpu")]

use half::f16;
use rustorch_gguf::GgmlType;
use rustorch_model::cpu::CpuWeight;
use rustorch_model::wgpu::{shaders, MvShapes, Options, WgpuBackend, WgpuBuf};
use rustorch_model::{AttnShape, Backend, CpuBackend};
use rustorch_quant::dispatch;

/// A small deterministic generator (xorshift), values roughly uniform in [-1, 1).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 23) as f32) - 1.0
    }

    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn gpu(subgroups: bool) -> WgpuBackend {
    gpu_with(subgroups, true)
}

/// With or without subgroups, and with the decode matmul through the subgroup-per-row mat-vec
/// (where subgroups are on) or the one-workgroup-per-row kernel.
fn gpu_with(subgroups: bool, matvec: bool) -> WgpuBackend {
    gpu_full(subgroups, matvec, "")
}

/// As [`gpu_with`], with the mat-vec's workgroup shapes as the `mv` option would set them (`""`:
/// the defaults).
fn gpu_full(subgroups: bool, matvec: bool, shapes: &str) -> WgpuBackend {
    let opts = Options {
        subgroups,
        matvec,
        matvec_shapes: MvShapes::parse(shapes).expect("mat-vec shapes"),
        ..Options::from_env()
    };
    WgpuBackend::new(opts).unwrap_or_else(|e| {
        panic!(
            "no GPU adapter for the wgpu tests ({e}); CI installs mesa-vulkan-drivers (lavapipe)"
        )
    })
}

fn upload(b: &mut WgpuBackend, v: &[f32]) -> WgpuBuf {
    let mut buf = b.alloc(v.len()).unwrap();
    b.write(&mut buf, 0, v).unwrap();
    buf
}

fn download(b: &mut WgpuBackend, x: &WgpuBuf, len: usize) -> Vec<f32> {
    let mut out = vec![0.0; len];
    b.read(x, 0, &mut out).unwrap();
    out
}

/// Largest |a - b| relative to `scale`, with the index where it occurs.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}: element {i}: gpu {g} vs reference {w}"
        );
    }
}

/// Bytes of `rows` rows of `w` in format `ty`, through the quant crate's reference quantizer.
fn quantize(ty: GgmlType, w: &[f32], rows: usize) -> Vec<u8> {
    let cols = w.len() / rows;
    match ty {
        GgmlType::F32 => bytemuck::cast_slice(w).to_vec(),
        GgmlType::F16 => w
            .iter()
            .flat_map(|&x| f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => {
            let row_bytes = ty.row_bytes(cols as u64).unwrap() as usize;
            let mut out = vec![0u8; rows * row_bytes];
            for (src, dst) in w.chunks(cols).zip(out.chunks_mut(row_bytes)) {
                dispatch::quantize_row(ty, src, dst).unwrap();
            }
            out
        }
    }
}

fn dequantize(ty: GgmlType, bytes: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    let row_bytes = bytes.len() / rows;
    for (src, dst) in bytes.chunks(row_bytes).zip(out.chunks_mut(cols)) {
        dispatch::dequantize_row(ty, src, dst).unwrap();
    }
    out
}

#[test]
fn matmul_and_embed_decode_every_format() {
    // The mat-vec takes Q4_K and Q6_K by block dots, the other formats by quads;
    // in workgroups of the default shapes (Q4_K and Q6_K: 128x4 for these rows, 256x4 for the
    // 5632-wide ones), of 64 invocations a row, or of other shapes (decode only, there). (Few
    // backends a process: with eleven more, the last tests found no adapter on an H100.)
    for (subgroups, matvec, shapes) in [
        (false, false, ""),
        (true, false, ""),
        (true, true, ""),
        (true, true, "64x1"),
        (true, true, "short=64x2;long=128x1"),
        (true, true, "short=256x2;long=256x4"),
    ] {
        let mut b = gpu_full(subgroups, matvec, shapes);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Rows not a multiple of the workgroup, five K super-blocks per row (40 chunks: more
        // than a subgroup of 32 takes in one step, and a partial second step); and a wide row
        // (576 four-weight steps: one pass of the mat-vec's eight-step loop and a tail); and
        // rows of 22 K super-blocks (ffn_down's 5632: a masked step at every shape).
        for (rows, cols, ty) in shaders::FORMATS
            .iter()
            .map(|&ty| (37, 1280, ty))
            .chain(shaders::FORMATS.iter().map(|&ty| (40, 2304, ty)))
            .chain([(37, 5632, GgmlType::Q4_K), (38, 5632, GgmlType::Q6_K)])
        {
            let w = rng.vec(rows * cols);
            let bytes = quantize(ty, &w, rows);
            // The reference is the quant crate's dequantized weights, in f64.
            let wd = dequantize(ty, &bytes, rows, cols);
            let weight = b.upload_matrix("w", ty, rows, cols, &bytes).unwrap();
            // Decode (1 token), one partial prompt tile (3), and two tiles (11).
            let ns: &[usize] = if shapes.is_empty() { &[1, 3, 11] } else { &[1] };
            for &n in ns {
                let x = rng.vec(n * cols);
                let xb = upload(&mut b, &x);
                let mut out = b.alloc(n * rows).unwrap();
                b.matmul(&weight, &xb, n, &mut out).unwrap();
                let got = download(&mut b, &out, n * rows);
                for t in 0..n {
                    for r in 0..rows {
                        let (mut dot, mut mag) = (0f64, 0f64);
                        for c in 0..cols {
                            let p = wd[r * cols + c] as f64 * x[t * cols + c] as f64;
                            dot += p;
                            mag += p.abs();
                        }
                        let g = got[t * rows + r] as f64;
                        assert!(
                            (g - dot).abs() <= 1e-5 * mag + 1e-6,
                            "{ty} matmul (subgroups {subgroups}, mat-vec {matvec}, shapes {shapes:?}, n {n}) row {r} token {t}: gpu {g} vs reference {dot}"
                        );
                    }
                }
            }
            let tokens = [5u32, 0, 36, 5];
            let mut out = b.alloc(tokens.len() * cols).unwrap();
            b.embed(&weight, &tokens, &mut out).unwrap();
            let got = download(&mut b, &out, tokens.len() * cols);
            for (t, &tok) in tokens.iter().enumerate() {
                let tok = tok as usize;
                assert_eq!(
                    &got[t * cols..(t + 1) * cols],
                    &wd[tok * cols..(tok + 1) * cols],
                    "{ty} embedding of token {tok}"
                );
            }
            let mut out = b.alloc(cols).unwrap();
            let bad = b.embed(&weight, &[rows as u32], &mut out);
            assert!(bad.is_err(), "{ty}: a token past the table is an error");
        }
    }
}

#[test]
fn unsupported_formats_are_a_clear_error() {
    let mut b = gpu(true);
    let bytes = vec![0u8; GgmlType::Q2_K.row_bytes(256).unwrap() as usize];
    let err = b
        .upload_matrix("blk.0.attn_q.weight", GgmlType::Q2_K, 1, 256, &bytes)
        .err()
        .expect("Q2_K has no wgpu kernel");
    let msg = err.to_string();
    assert!(
        msg.contains("blk.0.attn_q.weight") && msg.to_lowercase().contains("q2_k"),
        "{msg}"
    );
}

#[test]
fn elementwise_ops_match_the_cpu_backend() {
    for subgroups in [false, true] {
        let mut b = gpu(subgroups);
        let mut cpu = CpuBackend::new(1);
        let mut rng = Rng(42);
        let (n, dim) = (5, 576);

        // RMSNorm, narrow (one load per invocation) and wide (four-load steps and a tail).
        for (rn, rdim) in [(n, dim), (2, 1300)] {
            let x = rng.vec(rn * rdim);
            let wv = rng.vec(rdim);
            let mut want = vec![0.0; rn * rdim];
            cpu.rms_norm(&x, &CpuWeight::F32(wv.clone()), 1e-5, rn, rdim, &mut want);
            let w = b.upload_vector("norm", &wv).unwrap();
            let xg = upload(&mut b, &x);
            let mut out = b.alloc(rn * rdim).unwrap();
            b.rms_norm(&xg, &w, 1e-5, rn, rdim, &mut out);
            assert_close(
                &format!("rms_norm of {rdim}"),
                &download(&mut b, &out, rn * rdim),
                &want,
                1e-5,
            );
        }

        // RoPE, partial rotation (n_rot < head_dim) at an offset position.
        let x = rng.vec(n * dim);
        let shape = AttnShape {
            n_head: 9,
            n_head_kv: 3,
            head_dim: 64,
            n_rot: 48,
            rope_freq_base: 10000.0,
        };
        let mut want = x.clone();
        cpu.rope(&mut want, n, 9, &shape, 123);
        let mut xg = upload(&mut b, &x);
        b.rope(&mut xg, n, 9, &shape, 123);
        assert_close("rope", &download(&mut b, &xg, n * dim), &want, 1e-4);

        // SwiGLU, add, copy_within
        let (g, u) = (rng.vec(n * dim), rng.vec(n * dim));
        let mut want = g.clone();
        cpu.swiglu(&mut want, &u, n * dim);
        let mut gg = upload(&mut b, &g);
        let ug = upload(&mut b, &u);
        b.swiglu(&mut gg, &ug, n * dim);
        assert_close("swiglu", &download(&mut b, &gg, n * dim), &want, 1e-5);
        let mut want = g.clone();
        cpu.add(&mut want, &u, n * dim);
        let mut gg = upload(&mut b, &g);
        b.add(&mut gg, &ug, n * dim);
        assert_close("add", &download(&mut b, &gg, n * dim), &want, 1e-6);
        let mut want = g.clone();
        cpu.copy_within(&mut want, 4 * dim, 0, dim);
        b.copy_within(&mut gg, 4 * dim, 0, dim);
        let mut back = vec![0.0; dim];
        b.read(&gg, 0, &mut back).unwrap();
        let mut gg = upload(&mut b, &g);
        b.copy_within(&mut gg, 4 * dim, 0, dim);
        assert_close("copy_within", &download(&mut b, &gg, n * dim), &want, 0.0);

        // Argmax, with the maximum late in a long row.
        let mut v = rng.vec(49152);
        v[40000] = 5.0;
        let vg = upload(&mut b, &v);
        assert_eq!(b.argmax(&vg, v.len()).unwrap(), 40000);
    }
}

#[test]
fn attention_matches_the_cpu_backend() {
    // GQA 8:2, a prompt of 300 tokens (causal mask across several 64-key tiles), then one decode
    // step at position 300 (split-K over the cache) and one at 301.
    let shape = AttnShape {
        n_head: 8,
        n_head_kv: 2,
        head_dim: 64,
        n_rot: 64,
        rope_freq_base: 10000.0,
    };
    let (e, kvd, n_ctx) = (8 * 64, 2 * 64, 512);
    for subgroups in [false, true] {
        let mut b = gpu(subgroups);
        let mut cpu = CpuBackend::new(2);
        let mut rng = Rng(7);
        let mut ckv = cpu.alloc_kv(1, n_ctx, 2, 64).unwrap();
        let mut gkv = b.alloc_kv(1, n_ctx, 2, 64).unwrap();
        for (pos0, n) in [(0, 300), (300, 1), (301, 1)] {
            let q = rng.vec(n * e);
            // Scaled so that the softmax is far from uniform.
            let k: Vec<f32> = rng.vec(n * kvd).iter().map(|x| 3.0 * x).collect();
            let v = rng.vec(n * kvd);
            cpu.kv_store(&mut ckv, 0, &k, &v, n, pos0);
            let mut want = vec![0.0; n * e];
            cpu.attention(&q, &ckv, 0, n, pos0, &shape, &mut want);
            let (qg, kg, vg) = (upload(&mut b, &q), upload(&mut b, &k), upload(&mut b, &v));
            b.kv_store(&mut gkv, 0, &kg, &vg, n, pos0);
            let mut out = b.alloc(n * e).unwrap();
            b.attention(&qg, &gkv, 0, n, pos0, &shape, &mut out);
            // The CPU keeps the cache in f16 and rounds q and p to f16; the GPU keeps f32.
            assert_close(
                &format!("attention at {pos0} (subgroups {subgroups})"),
                &download(&mut b, &out, n * e),
                &want,
                2e-2,
            );
        }
    }
}

#[test]
fn every_shader_translates_to_msl() {
    for (name, src) in shaders::all_modules() {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        let options = naga::back::msl::Options {
            lang_version: (2, 4),
            ..Default::default()
        };
        let pipeline = naga::back::msl::PipelineOptions::default();
        let (msl, _) = naga::back::msl::write_string(&module, &info, &options, &pipeline)
            .unwrap_or_else(|e| panic!("{name}: MSL: {e}"));
        assert!(msl.contains("kernel void"), "{name}: no kernel in the MSL");
    }
}

/// `W · x[t]` in f64 over dequantized weights, as `(n, rows)`.
fn reference_matmul(wd: &[f32], x: &[f32], rows: usize, cols: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0f32; n * rows];
    for t in 0..n {
        for r in 0..rows {
            let dot: f64 = (0..cols)
                .map(|c| wd[r * cols + c] as f64 * x[t * cols + c] as f64)
                .sum();
            out[t * rows + r] = dot as f32;
        }
    }
    out
}

#[test]
fn fused_matmuls_match_the_reference() {
    // q/k/v of one format in one dispatch (with a differently typed third weight split off),
    // gate/up folded with SwiGLU, and the residual add folded into the matmul before it.
    let cols = 256;
    for (subgroups, matvec) in [(false, false), (true, false), (true, true)] {
        let mut b = gpu_with(subgroups, matvec);
        let mut rng = Rng(99);
        for n in [1, 10] {
            for types in [
                [GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q4_K],
                [GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K],
            ] {
                let rows = [96, 32, 32];
                let mut ws = Vec::new();
                let mut wds = Vec::new();
                for (&ty, &r) in types.iter().zip(&rows) {
                    let w = rng.vec(r * cols);
                    let bytes = quantize(ty, &w, r);
                    wds.push(dequantize(ty, &bytes, r, cols));
                    ws.push(b.upload_matrix("w", ty, r, cols, &bytes).unwrap());
                }
                let x = rng.vec(n * cols);
                let xg = upload(&mut b, &x);
                let mut o0 = b.alloc(n * rows[0]).unwrap();
                let mut o1 = b.alloc(n * rows[1]).unwrap();
                let mut o2 = b.alloc(n * rows[2]).unwrap();
                b.matmuls(
                    &[&ws[0], &ws[1], &ws[2]],
                    &xg,
                    n,
                    &mut [&mut o0, &mut o1, &mut o2],
                )
                .unwrap();
                // The decode mat-vec takes weights of mixed formats in one dispatch.
                let one = types[2] == types[0] || (n == 1 && matvec && subgroups);
                assert_eq!(
                    b.pending_ops(),
                    if one { 1 } else { 2 },
                    "{types:?}: dispatches"
                );
                for (i, o) in [&o0, &o1, &o2].into_iter().enumerate() {
                    let want = reference_matmul(&wds[i], &x, rows[i], cols, n);
                    assert_close(
                        &format!("{types:?} weight {i} (n {n})"),
                        &download(&mut b, o, n * rows[i]),
                        &want,
                        1e-4,
                    );
                }
            }

            // gate/up + SwiGLU
            let ff = 80;
            let (wg, wu) = (rng.vec(ff * cols), rng.vec(ff * cols));
            let (bg, bu) = (
                quantize(GgmlType::Q4_0, &wg, ff),
                quantize(GgmlType::Q4_0, &wu, ff),
            );
            let gate_w = b
                .upload_matrix("gate", GgmlType::Q4_0, ff, cols, &bg)
                .unwrap();
            let up_w = b
                .upload_matrix("up", GgmlType::Q4_0, ff, cols, &bu)
                .unwrap();
            let x = rng.vec(n * cols);
            let xg = upload(&mut b, &x);
            let mut gate = b.alloc(n * ff).unwrap();
            let mut up = b.alloc(n * ff).unwrap();
            b.matmuls(&[&gate_w, &up_w], &xg, n, &mut [&mut gate, &mut up])
                .unwrap();
            b.swiglu(&mut gate, &up, n * ff);
            assert_eq!(b.pending_ops(), 1, "gate/up and SwiGLU in one dispatch");
            let g = reference_matmul(&dequantize(GgmlType::Q4_0, &bg, ff, cols), &x, ff, cols, n);
            let u = reference_matmul(&dequantize(GgmlType::Q4_0, &bu, ff, cols), &x, ff, cols, n);
            let want: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            assert_close(
                "fused swiglu",
                &download(&mut b, &gate, n * ff),
                &want,
                1e-4,
            );
            assert_close(
                "fused swiglu's up",
                &download(&mut b, &up, n * ff),
                &u,
                1e-4,
            );

            // matmul + residual add
            let resid = rng.vec(n * ff);
            let mut rg = upload(&mut b, &resid);
            let mut proj = b.alloc(n * ff).unwrap();
            b.matmul(&gate_w, &xg, n, &mut proj).unwrap();
            b.add(&mut rg, &proj, n * ff);
            assert_eq!(
                b.pending_ops(),
                1,
                "matmul and residual add in one dispatch"
            );
            let want: Vec<f32> = resid.iter().zip(&g).map(|(r, g)| r + g).collect();
            assert_close(
                "fused residual add",
                &download(&mut b, &rg, n * ff),
                &want,
                1e-4,
            );
            assert_close(
                "fused add's projection",
                &download(&mut b, &proj, n * ff),
                &g,
                1e-4,
            );
        }
    }
}

#[test]
fn rms_norm_folds_into_the_decode_matvec() {
    // rms_norm then q/k/v of mixed formats, and rms_norm then gate/up + SwiGLU, as the forward
    // pass records them for one token: with the mat-vec, each pair is one dispatch that also
    // writes the normalised input; without it, the ops run apart. Widths with a tail of the
    // norm's four-load steps (320) and of the mat-vec's four-step loop (1280 over 32 lanes).
    // Mat-vec workgroups of several rows (the defaults: q/k/v 128x4) or more invocations a row
    // too (rows 37 below: a last workgroup of rows past the end).
    for (subgroups, matvec, shapes) in [
        (false, false, ""),
        (true, false, ""),
        (true, true, ""),
        (true, true, "gu=128x4;short=256x1"),
    ] {
        let mut b = gpu_full(subgroups, matvec, shapes);
        let mut cpu = CpuBackend::new(1);
        let mut rng = Rng(2024);
        let fold = subgroups && matvec;
        for cols in [256, 1280, 2560] {
            let x = rng.vec(cols);
            let nw = rng.vec(cols);
            let mut normed = vec![0.0; cols];
            cpu.rms_norm(&x, &CpuWeight::F32(nw.clone()), 1e-5, 1, cols, &mut normed);
            let nwg = b.upload_vector("norm", &nw).unwrap();
            let xg = upload(&mut b, &x);

            let types = [GgmlType::Q4_K, GgmlType::Q4_K, GgmlType::Q6_K];
            let rows = [64, 32, 37];
            let (mut ws, mut wds) = (Vec::new(), Vec::new());
            for (&ty, &r) in types.iter().zip(&rows) {
                let bytes = quantize(ty, &rng.vec(r * cols), r);
                wds.push(dequantize(ty, &bytes, r, cols));
                ws.push(b.upload_matrix("w", ty, r, cols, &bytes).unwrap());
            }
            let mut xb = b.alloc(cols).unwrap();
            let mut o: Vec<WgpuBuf> = rows.iter().map(|&r| b.alloc(r).unwrap()).collect();
            b.rms_norm(&xg, &nwg, 1e-5, 1, cols, &mut xb);
            let [o0, o1, o2] = &mut o[..] else {
                unreachable!()
            };
            b.matmuls(&[&ws[0], &ws[1], &ws[2]], &xb, 1, &mut [o0, o1, o2])
                .unwrap();
            let want_ops = if fold { 1 } else { 3 };
            assert_eq!(
                b.pending_ops(),
                want_ops,
                "rms_norm + q/k/v dispatches ({cols})"
            );
            let what =
                format!("(subgroups {subgroups}, mat-vec {matvec}, shapes {shapes:?}, {cols})");
            assert_close(
                &format!("normed input {what}"),
                &download(&mut b, &xb, cols),
                &normed,
                1e-5,
            );
            for i in 0..3 {
                let want = reference_matmul(&wds[i], &normed, rows[i], cols, 1);
                assert_close(
                    &format!("weight {i} after the norm {what}"),
                    &download(&mut b, &o[i], rows[i]),
                    &want,
                    1e-4,
                );
            }

            // Gate/up of quads, of block dots (Q4_K), and of block dots of two formats.
            for (tg, tu) in [
                (GgmlType::Q4_0, GgmlType::Q8_0),
                (GgmlType::Q4_K, GgmlType::Q4_K),
                (GgmlType::Q6_K, GgmlType::Q4_K),
            ] {
                let ff = 94;
                let (bg, bu) = (
                    quantize(tg, &rng.vec(ff * cols), ff),
                    quantize(tu, &rng.vec(ff * cols), ff),
                );
                let gate_w = b.upload_matrix("gate", tg, ff, cols, &bg).unwrap();
                let up_w = b.upload_matrix("up", tu, ff, cols, &bu).unwrap();
                let (mut gate, mut up) = (b.alloc(ff).unwrap(), b.alloc(ff).unwrap());
                let mut xb = b.alloc(cols).unwrap();
                b.rms_norm(&xg, &nwg, 1e-5, 1, cols, &mut xb);
                b.matmuls(&[&gate_w, &up_w], &xb, 1, &mut [&mut gate, &mut up])
                    .unwrap();
                b.swiglu(&mut gate, &up, ff);
                // Apart, gate/up of one format (and SwiGLU) still share a dispatch.
                let want_ops = match (fold, tg == tu) {
                    (true, _) => 1,
                    (false, true) => 2,
                    (false, false) => 4,
                };
                assert_eq!(
                    b.pending_ops(),
                    want_ops,
                    "rms_norm + {tg}/{tu} gate/up + SwiGLU dispatches"
                );
                let g = reference_matmul(&dequantize(tg, &bg, ff, cols), &normed, ff, cols, 1);
                let u = reference_matmul(&dequantize(tu, &bu, ff, cols), &normed, ff, cols, 1);
                let want: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                assert_close(
                    &format!("{tg}/{tu} swiglu after the norm {what}"),
                    &download(&mut b, &gate, ff),
                    &want,
                    1e-4,
                );
                assert_close(
                    &format!("{tg}/{tu} up after the norm {what}"),
                    &download(&mut b, &up, ff),
                    &u,
                    1e-4,
                );
                assert_close(
                    &format!("normed input, gate/up {what}"),
                    &download(&mut b, &xb, cols),
                    &normed,
                    1e-5,
                );
            }
        }
    }
}

#[test]
fn rope_of_queries_and_keys_joins_the_cache_store() {
    // As the forward pass calls them: rope(q), rope(k), kv_store(k, v) become one dispatch;
    // then attention reads the cache it wrote. In decode (one token) that dispatch folds into the
    // attention's; prompts keep it apart: checked against the CPU at positions 0, 1, 2, 20,
    // 21, 300 and 301 (split-K), GQA 6:2 and 8:2, head_dim 64 and 128 (96 dims rotated), and the
    // cache it leaves is read by a plain attention of the rotated query and by the next step.
    let cases = [
        (6, 2, 64, 64, 500000.0, vec![(0, 1), (1, 1), (2, 1)]),
        (6, 2, 64, 64, 500000.0, vec![(0, 20), (20, 1), (21, 1)]),
        (8, 2, 128, 96, 10000.0, vec![(0, 300), (300, 1), (301, 1)]),
    ];
    let n_ctx = 384;
    for subgroups in [false, true] {
        let mut b = WgpuBackend::new(Options {
            subgroups,
            ..Options::from_env()
        })
        .expect("a GPU adapter");
        for (n_head, n_head_kv, hd, n_rot, base, steps) in &cases {
            let (n_head, n_head_kv, hd) = (*n_head, *n_head_kv, *hd);
            let shape = AttnShape {
                n_head,
                n_head_kv,
                head_dim: hd,
                n_rot: *n_rot,
                rope_freq_base: *base,
            };
            let (e, kvd) = (n_head * hd, n_head_kv * hd);
            let mut cpu = CpuBackend::new(2);
            let mut rng = Rng(11);
            let mut ckv = cpu.alloc_kv(2, n_ctx, n_head_kv, hd).unwrap();
            let mut gkv = b.alloc_kv(2, n_ctx, n_head_kv, hd).unwrap();
            for &(pos0, n) in steps {
                let (mut q, v) = (rng.vec(n * e), rng.vec(n * kvd));
                let mut k: Vec<f32> = rng.vec(n * kvd).iter().map(|x| 3.0 * x).collect();
                let (mut qg, mut kg, vg) =
                    (upload(&mut b, &q), upload(&mut b, &k), upload(&mut b, &v));
                cpu.rope(&mut q, n, n_head, &shape, pos0);
                cpu.rope(&mut k, n, n_head_kv, &shape, pos0);
                cpu.kv_store(&mut ckv, 1, &k, &v, n, pos0);
                let mut want = vec![0.0; n * e];
                cpu.attention(&q, &ckv, 1, n, pos0, &shape, &mut want);
                b.rope(&mut qg, n, n_head, &shape, pos0);
                b.rope(&mut kg, n, n_head_kv, &shape, pos0);
                b.kv_store(&mut gkv, 1, &kg, &vg, n, pos0);
                assert_eq!(
                    b.pending_ops(),
                    1,
                    "rope q, rope k and the store in one dispatch"
                );
                let mut out = b.alloc(n * e).unwrap();
                b.attention(&qg, &gkv, 1, n, pos0, &shape, &mut out);
                let split = usize::from(n == 1 && pos0 + 1 > 256);
                let fused = n == 1;
                assert_eq!(
                    b.pending_ops(),
                    2 + split - usize::from(fused),
                    "decode attention takes the RoPE and the store in: {fused}"
                );
                let what = format!("at {pos0} (hd {hd}, subgroups {subgroups})");
                assert_close(
                    &format!("attention {what}"),
                    &download(&mut b, &out, n * e),
                    &want,
                    2e-2,
                );
                if fused {
                    // The cache holds the rotated key and the value: a plain attention of
                    // the rotated query (nothing to fold) reads them back.
                    let qr = upload(&mut b, &q);
                    let mut again = b.alloc(n * e).unwrap();
                    b.attention(&qr, &gkv, 1, n, pos0, &shape, &mut again);
                    assert_close(
                        &format!("attention from the cache {what}"),
                        &download(&mut b, &again, n * e),
                        &want,
                        2e-2,
                    );
                } else {
                    // Angles up to 300 rad: an H100's sin and cos (Vulkan) differ from the
                    // CPU's by about 1e-4 there.
                    assert_close(
                        &format!("rotated q {what}"),
                        &download(&mut b, &qg, n * e),
                        &q,
                        1e-3,
                    );
                    assert_close(
                        &format!("rotated k {what}"),
                        &download(&mut b, &kg, n * kvd),
                        &k,
                        1e-3,
                    );
                }
            }
        }
    }
}

#[test]
fn missing_adapters_and_oversized_buffers_are_clear_errors() {
    let opts = Options {
        adapter: Some("no-such-gpu".into()),
        ..Options::from_env()
    };
    let msg = WgpuBackend::new(opts)
        .err()
        .expect("no adapter has that name")
        .to_string();
    assert!(
        msg.contains("no-such-gpu") && msg.contains("adapters:"),
        "{msg}"
    );

    let mut b = gpu(true);
    let msg = b
        .alloc(1 << 40)
        .err()
        .expect("4 TiB is too much")
        .to_string();
    assert!(msg.contains("exceeds this GPU's limit"), "{msg}");
    let msg = b
        .alloc_kv(32, 1 << 30, 8, 128)
        .err()
        .expect("a KV cache of 2^30 positions")
        .to_string();
    assert!(msg.contains("use a smaller -c"), "{msg}");
    // The backend still works afterwards.
    let x = upload(&mut b, &[1.0, 2.0]);
    assert_eq!(download(&mut b, &x, 2), [1.0, 2.0]);
}
