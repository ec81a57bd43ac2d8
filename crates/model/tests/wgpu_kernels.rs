//! Every wgpu kernel against the CPU scalar reference on fresh random inputs, on whatever Vulkan
//! (or Metal) adapter is present (lavapipe in CI), with and without subgroup operations; and every
//! shader translated to Metal Shading Language by naga.
#![cfg(feature = "wgpu")]

use half::f16;
use rustorch_gguf::GgmlType;
use rustorch_model::config::RopeStyle;
use rustorch_model::cpu::CpuWeight;
use rustorch_model::wgpu::{shaders, CoopMode, MvShapes, Options, WgpuBackend, WgpuBuf};
use rustorch_model::{AttnShape, Backend, Batch, CpuBackend, KvSpec};
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
/// the defaults). The tiled prompt matmul keeps f32 tiles here, so that these tests hold every
/// kernel to f32's tolerances; its f16 tiles have a test of their own.
fn gpu_full(subgroups: bool, matvec: bool, shapes: &str) -> WgpuBackend {
    let opts = Options {
        subgroups,
        matvec,
        matvec_shapes: MvShapes::parse(shapes).expect("mat-vec shapes"),
        f16: false,
        ..Options::from_env()
    };
    WgpuBackend::new(opts).unwrap_or_else(|e| {
        panic!(
            "no GPU adapter for the wgpu tests ({e}); CI installs mesa-vulkan-drivers (lavapipe)"
        )
    })
}

/// Starts a step of rows of sequences `seqs` at positions `pos` (tokens `tokens`, or zeros).
fn step<B: Backend>(b: &mut B, tokens: &[u32], seqs: &[u32], pos: &[u32]) {
    let zeros = vec![0u32; seqs.len()];
    let tokens = if tokens.is_empty() {
        &zeros[..]
    } else {
        tokens
    };
    let batch = Batch { tokens, seqs, pos };
    b.begin_step(&batch, &[]).unwrap();
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
            // The step's tokens, of rows of two sequences.
            let tokens = [5u32, 0, 36, 5];
            step(&mut b, &tokens, &[0, 1, 0, 1], &[0, 0, 1, 1]);
            let mut out = b.alloc(tokens.len() * cols).unwrap();
            b.embed(&weight, tokens.len(), &mut out).unwrap();
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
            step(&mut b, &[rows as u32], &[0], &[0]);
            let bad = b.embed(&weight, 1, &mut out);
            assert!(bad.is_err(), "{ty}: a token past the table is an error");
            let bad = b.embed(&weight, 2, &mut out);
            assert!(
                bad.is_err(),
                "{ty}: more rows than the step has is an error"
            );
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
            cpu.rms_norm(&x, &CpuWeight::F32(wv.clone()), 1e-5, rn, rdim, &mut want)
                .unwrap();
            let w = b.upload_vector("norm", &wv).unwrap();
            let xg = upload(&mut b, &x);
            let mut out = b.alloc(rn * rdim).unwrap();
            b.rms_norm(&xg, &w, 1e-5, rn, rdim, &mut out).unwrap();
            assert_close(
                &format!("rms_norm of {rdim}"),
                &download(&mut b, &out, rn * rdim),
                &want,
                1e-5,
            );
        }

        // RoPE, each row at its own position: rows of two sequences, interleaved, at positions
        // far apart. Adjacent pairs (Llama) and NEOX pairs (i, i + n_rot / 2), of all dims and of
        // some (n_rot < head_dim); with frequency factors (Llama 3's rope_freqs, LongRoPE's)
        // dividing each pair's angle, and with sine and cosine scaled (LongRoPE's mscale).
        let (seqs, pos) = ([0, 1, 0, 1, 1], [123, 5, 124, 6, 7]);
        step(&mut cpu, &[], &seqs, &pos);
        step(&mut b, &[], &seqs, &pos);
        let ff: Vec<f32> = rng.vec(32).iter().map(|f| 4.5 + 3.5 * f).collect();
        let fw = (
            CpuWeight::F32(ff.clone()),
            b.upload_vector("rope_freqs", &ff).unwrap(),
        );
        for (rope, n_rot, mscale, factors) in [
            (RopeStyle::Adjacent, 48, 1.0, false),
            (RopeStyle::Adjacent, 64, 1.0, true),
            (RopeStyle::Neox, 64, 1.0, false),
            (RopeStyle::Neox, 32, 1.0, false),
            (RopeStyle::Neox, 64, 1.19, true),
        ] {
            let x = rng.vec(n * dim);
            let shape = AttnShape {
                rope,
                rope_mscale: mscale,
                ..AttnShape::llama(9, 3, 64, n_rot, 10000.0)
            };
            let what = format!("rope {rope:?} of {n_rot} dims, mscale {mscale}, factors {factors}");
            let mut want = x.clone();
            cpu.rope(&mut want, n, 9, &shape, factors.then_some(&fw.0))
                .unwrap();
            let mut xg = upload(&mut b, &x);
            b.rope(&mut xg, n, 9, &shape, factors.then_some(&fw.1))
                .unwrap();
            assert_close(&what, &download(&mut b, &xg, n * dim), &want, 1e-4);
            assert!(
                b.rope(&mut xg, n + 1, 9, &shape, None).is_err(),
                "RoPE of more rows than the step has"
            );
        }
        let short = b.upload_vector("rope_freqs", &ff[..16]).unwrap();
        let mut xg = upload(&mut b, &rng.vec(n * dim));
        let shape = AttnShape::llama(9, 3, 64, 64, 10000.0);
        assert!(
            b.rope(&mut xg, n, 9, &shape, Some(&short)).is_err(),
            "16 frequency factors for 32 pairs"
        );

        // GeGLU (GELU's tanh form as ggml's f16 table gives it), over values past its ends at
        // -10 and 10; add_bias over rows; scale.
        let (g, u): (Vec<f32>, Vec<f32>) = (
            rng.vec(n * dim).iter().map(|x| 12.0 * x).collect(),
            rng.vec(n * dim),
        );
        let mut want = g.clone();
        cpu.geglu(&mut want, &u, n * dim).unwrap();
        let mut gg = upload(&mut b, &g);
        let ug = upload(&mut b, &u);
        b.geglu(&mut gg, &ug, n * dim).unwrap();
        // Both round GELU's value to f16 as ggml's table does; where the GPU's tanh differs from
        // the CPU's in the last bits, the value may round to the next f16 (2^-10 relative).
        assert_close("geglu", &download(&mut b, &gg, n * dim), &want, 1e-3);
        let (x, bias) = (rng.vec(n * dim), rng.vec(dim));
        let mut want = x.clone();
        cpu.add_bias(&mut want, &CpuWeight::F32(bias.clone()), n, dim)
            .unwrap();
        let mut xg = upload(&mut b, &x);
        let bg = b.upload_vector("bias", &bias).unwrap();
        b.add_bias(&mut xg, &bg, n, dim).unwrap();
        assert_close("add_bias", &download(&mut b, &xg, n * dim), &want, 0.0);
        assert!(
            b.add_bias(&mut xg, &bg, n, dim - 4).is_err(),
            "a bias of another width"
        );
        assert!(
            b.add_bias(&mut xg, &bg, n + 1, dim).is_err(),
            "a bias past the end"
        );
        let mut want = x.clone();
        cpu.scale(&mut want, 25.3, n * dim).unwrap();
        let mut xg = upload(&mut b, &x);
        b.scale(&mut xg, 25.3, n * dim).unwrap();
        assert_close("scale", &download(&mut b, &xg, n * dim), &want, 0.0);
        assert!(
            b.scale(&mut xg, 2.0, n * dim + 1).is_err(),
            "a scale past the end"
        );

        // SwiGLU, add, copy_within
        let (g, u) = (rng.vec(n * dim), rng.vec(n * dim));
        let mut want = g.clone();
        cpu.swiglu(&mut want, &u, n * dim).unwrap();
        let mut gg = upload(&mut b, &g);
        let ug = upload(&mut b, &u);
        b.swiglu(&mut gg, &ug, n * dim).unwrap();
        assert_close("swiglu", &download(&mut b, &gg, n * dim), &want, 1e-5);
        let mut want = g.clone();
        cpu.add(&mut want, &u, n * dim).unwrap();
        let mut gg = upload(&mut b, &g);
        b.add(&mut gg, &ug, n * dim).unwrap();
        assert_close("add", &download(&mut b, &gg, n * dim), &want, 1e-6);
        let mut want = g.clone();
        cpu.copy_within(&mut want, 4 * dim, 0, dim).unwrap();
        b.copy_within(&mut gg, 4 * dim, 0, dim).unwrap();
        let mut back = vec![0.0; dim];
        b.read(&gg, 0, &mut back).unwrap();
        let mut gg = upload(&mut b, &g);
        b.copy_within(&mut gg, 4 * dim, 0, dim).unwrap();
        assert_close("copy_within", &download(&mut b, &gg, n * dim), &want, 0.0);
        assert!(
            b.add(&mut gg, &ug, n * dim + 1).is_err(),
            "an add past the end"
        );

        // Argmax, with the maximum late in a long row, and of a row at an offset (the second
        // row of logits), whose index counts from the offset.
        let mut v = rng.vec(2 * 49152);
        v[40000] = 5.0;
        v[49152 + 7] = 6.0;
        v[49152 + 9] = 6.0;
        let vg = upload(&mut b, &v);
        assert_eq!(b.argmax(&vg, 0, 49152).unwrap(), 40000);
        assert_eq!(
            b.argmax(&vg, 49152, 49152).unwrap(),
            7,
            "first of two equal"
        );
        assert!(b.argmax(&vg, 49152, 49153).is_err(), "argmax past the end");
    }
}

/// Rows of two sequences: each `(seq, pos0, n)` a run of `n` rows at `pos0..`, the runs'
/// rows interleaved one by one (`A0 B0 A1 B1 ...`, then the longer run's rest).
fn interleave(runs: &[(u32, u32, u32)]) -> (Vec<u32>, Vec<u32>) {
    let (mut seqs, mut pos) = (Vec::new(), Vec::new());
    let longest = runs.iter().map(|r| r.2).max().unwrap_or(0);
    for i in 0..longest {
        for &(seq, pos0, n) in runs {
            if i < n {
                seqs.push(seq);
                pos.push(pos0 + i);
            }
        }
    }
    (seqs, pos)
}

#[test]
fn attention_matches_the_cpu_backend() {
    // GQA 8:2 over a cache of two sequences, each row at its own position in its own sequence:
    // a prompt of 300 rows of sequence 1 (causal mask across several 64-key tiles) beside 20 of
    // sequence 0, interleaved; then both sequences' rows mixed (two runs interleaved); a decode
    // step of both (split-K over the longer cache, the shorter one's last splits empty); and one
    // of sequence 1 alone. kv_store writes each row into its sequence at its position. Llama's
    // shape; another score scale with a sliding window of 280 (decode split-K over the window,
    // its splits starting past 0) and of 40 (windows not on 64-key tiles); head_dim 256 (Gemma
    // 3, MQA 4:1, split-K past 256 keys). Each on a cache with every sequence on its own blocks
    // side by side, and on a pool of 24 blocks (64 side by side) with both sequences' blocks
    // scattered over it (sequence 1's in reverse order around sequence 0's), mapped alike on both.
    let steps = [
        interleave(&[(1, 0, 300), (0, 0, 20)]),
        interleave(&[(0, 20, 3), (1, 300, 2)]),
        (vec![1, 0], vec![302, 23]),
        (vec![1], vec![303]),
    ];
    let shapes = [
        AttnShape::llama(8, 2, 64, 64, 10000.0),
        AttnShape {
            scale: 0.3,
            window: 280,
            ..AttnShape::llama(8, 2, 64, 64, 10000.0)
        },
        AttnShape {
            window: 40,
            ..AttnShape::llama(8, 2, 64, 64, 10000.0)
        },
        AttnShape::llama(4, 1, 256, 256, 10000.0),
    ];
    let n_ctx = 512;
    let blocks_0 = [23, 11];
    let blocks_1: Vec<u32> = (12..23).rev().chain((3..11).rev()).collect();
    // The cache in f16 (the default where the adapter has `shader-f16`, as lavapipe has) and in
    // f32.
    for (subgroups, kv_f16) in [(false, true), (true, true), (false, false)] {
        let mut b = WgpuBackend::new(Options {
            subgroups,
            kv_f16,
            f16: false,
            ..Options::from_env()
        })
        .unwrap();
        for (shape, scattered) in shapes.iter().flat_map(|s| [(s, false), (s, true)]) {
            let (hd, n_kv_head) = (shape.head_dim, shape.n_head_kv);
            let (e, kvd) = (shape.n_head * hd, n_kv_head * hd);
            let mut cpu = CpuBackend::new(2);
            let mut rng = Rng(7);
            let mut spec = KvSpec::side_by_side_of(1, 2, n_ctx, n_kv_head, hd);
            if scattered {
                spec.n_blocks = 24;
            }
            let mut ckv = cpu.alloc_kv(&spec).unwrap();
            let mut gkv = b.alloc_kv(&spec).unwrap();
            if scattered {
                for (seq, blocks) in [(0, &blocks_0[..]), (1, &blocks_1[..])] {
                    cpu.map_blocks(&mut ckv, seq, 0, blocks).unwrap();
                    b.map_blocks(&mut gkv, seq, 0, blocks).unwrap();
                }
            }
            for (seqs, pos) in &steps {
                let n = seqs.len();
                let q = rng.vec(n * e);
                // Scaled so that the softmax is far from uniform.
                let k: Vec<f32> = rng.vec(n * kvd).iter().map(|x| 3.0 * x).collect();
                let v = rng.vec(n * kvd);
                step(&mut cpu, &[], seqs, pos);
                cpu.kv_store(&mut ckv, 0, &k, &v, n).unwrap();
                let mut want = vec![0.0; n * e];
                cpu.attention(&q, &ckv, 0, n, shape, &mut want).unwrap();
                let (qg, kg, vg) = (upload(&mut b, &q), upload(&mut b, &k), upload(&mut b, &v));
                step(&mut b, &[], seqs, pos);
                b.kv_store(&mut gkv, 0, &kg, &vg, n).unwrap();
                let mut out = b.alloc(n * e).unwrap();
                b.attention(&qg, &gkv, 0, n, shape, &mut out).unwrap();
                // The CPU keeps the cache in f16 and rounds q and p to f16; the GPU keeps its
                // cache in f16 or f32 and computes in f32.
                assert_close(
                    &format!(
                        "attention of {n} rows at {:?} (hd {hd}, scale {}, window {}, subgroups {subgroups}, kv f16 {kv_f16}, scattered {scattered})",
                        &pos[..n.min(4)],
                        shape.scale,
                        shape.window
                    ),
                    &download(&mut b, &out, n * e),
                    &want,
                    2e-2,
                );
            }
            // Rows outside the cache are errors, not stray writes.
            let (qg, kg) = (upload(&mut b, &rng.vec(e)), upload(&mut b, &rng.vec(kvd)));
            let mut out = b.alloc(e).unwrap();
            step(&mut b, &[], &[2], &[0]);
            assert!(
                b.kv_store(&mut gkv, 0, &kg, &kg, 1).is_err(),
                "sequence 2 of 2"
            );
            assert!(b.attention(&qg, &gkv, 0, 1, shape, &mut out).is_err());
            step(&mut b, &[], &[0], &[n_ctx as u32]);
            assert!(
                b.kv_store(&mut gkv, 0, &kg, &kg, 1).is_err(),
                "position n_ctx"
            );
            assert!(
                b.kv_store(&mut gkv, 1, &kg, &kg, 1).is_err(),
                "layer 1 of 1"
            );
        }
    }
}

#[test]
fn every_shader_translates_to_msl() {
    // Every module to SPIR-V (Vulkan) and, but for the Vulkan-only ones, to MSL (Metal).
    let metal = shaders::all_modules().into_iter().map(|m| (m, true));
    let vulkan = shaders::vulkan_modules().into_iter().map(|m| (m, false));
    for ((name, src), msl) in metal.chain(vulkan) {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        let spv = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        naga::back::spv::write_vec(&module, &info, &spv, None)
            .unwrap_or_else(|e| panic!("{name}: SPIR-V: {e}"));
        if !msl {
            continue;
        }
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
    reference_matmul_mags(wd, x, rows, cols, n).0
}

/// [`reference_matmul`], and per output the sum of |products| (a tolerance's scale).
fn reference_matmul_mags(
    wd: &[f32],
    x: &[f32],
    rows: usize,
    cols: usize,
    n: usize,
) -> (Vec<f32>, Vec<f64>) {
    let mut out = vec![0f32; n * rows];
    let mut mag = vec![0f64; n * rows];
    for t in 0..n {
        for r in 0..rows {
            let (mut dot, mut m) = (0f64, 0f64);
            for c in 0..cols {
                let p = wd[r * cols + c] as f64 * x[t * cols + c] as f64;
                dot += p;
                m += p.abs();
            }
            out[t * rows + r] = dot as f32;
            mag[t * rows + r] = m;
        }
    }
    (out, mag)
}

#[test]
fn fused_matmuls_match_the_reference() {
    // q/k/v of one format in one dispatch (with a differently typed third weight split off,
    // except in the decode mat-vec); `ffn_swiglu`: norm, gate/up and SwiGLU in two dispatches (the
    // norm's, and gate/up with SwiGLU folded in), one in decode; `matmul_add`: the residual add
    // folded into the matmul.
    let cols = 256;
    for (subgroups, matvec) in [(false, false), (true, false), (true, true)] {
        let mut b = gpu_with(subgroups, matvec);
        let mut cpu = CpuBackend::new(1);
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

            // norm -> gate/up + SwiGLU
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
            let (wgd, wud) = (
                dequantize(GgmlType::Q4_0, &bg, ff, cols),
                dequantize(GgmlType::Q4_0, &bu, ff, cols),
            );
            let (x, nw) = (rng.vec(n * cols), rng.vec(cols));
            let mut normed = vec![0.0; n * cols];
            cpu.rms_norm(&x, &CpuWeight::F32(nw.clone()), 1e-5, n, cols, &mut normed)
                .unwrap();
            let nwg = b.upload_vector("norm", &nw).unwrap();
            let xg = upload(&mut b, &x);
            let mut xb = b.alloc(n * cols).unwrap();
            let mut gate = b.alloc(n * ff).unwrap();
            let mut up = b.alloc(n * ff).unwrap();
            b.ffn_swiglu(
                &xg,
                &nwg,
                1e-5,
                (n, cols, ff),
                &mut xb,
                [&gate_w, &up_w],
                &mut gate,
                &mut up,
            )
            .unwrap();
            let fold = n == 1 && subgroups && matvec;
            assert_eq!(
                b.pending_ops(),
                if fold { 1 } else { 2 },
                "norm, gate/up and SwiGLU dispatches (n {n})"
            );
            let g = reference_matmul(&wgd, &normed, ff, cols, n);
            let u = reference_matmul(&wud, &normed, ff, cols, n);
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
            assert_close(
                "fused swiglu's normed input",
                &download(&mut b, &xb, n * cols),
                &normed,
                1e-5,
            );

            // matmul + residual add
            let resid = rng.vec(n * ff);
            let mut rg = upload(&mut b, &resid);
            let mut proj = b.alloc(n * ff).unwrap();
            b.matmul_add(&gate_w, &xg, (n, ff), &mut rg, &mut proj)
                .unwrap();
            assert_eq!(
                b.pending_ops(),
                1,
                "matmul and residual add in one dispatch"
            );
            let g = reference_matmul(&wgd, &x, ff, cols, n);
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
    // `norm_matmuls` of q/k/v of mixed formats and of one weight (the output head), and
    // `ffn_swiglu`, for one row: with the mat-vec, each is one dispatch that also writes the
    // normalised input; without it, the ops run apart. Widths with a tail of the norm's four-load
    // steps (320) and of the mat-vec's four-step loop (1280 over 32 lanes). Mat-vec workgroups of
    // several rows (the defaults: q/k/v 128x4) or more invocations a row too (rows 37 below: a
    // last workgroup of rows past the end).
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
            cpu.rms_norm(&x, &CpuWeight::F32(nw.clone()), 1e-5, 1, cols, &mut normed)
                .unwrap();
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
            let [o0, o1, o2] = &mut o[..] else {
                unreachable!()
            };
            b.norm_matmuls(
                &xg,
                &nwg,
                1e-5,
                (1, cols),
                &mut xb,
                &[&ws[0], &ws[1], &ws[2]],
                &mut [o0, o1, o2],
            )
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

            // One weight, as the output head.
            let mut xb = b.alloc(cols).unwrap();
            b.norm_matmuls(
                &xg,
                &nwg,
                1e-5,
                (1, cols),
                &mut xb,
                &[&ws[2]],
                &mut [&mut o[2]],
            )
            .unwrap();
            assert_eq!(b.pending_ops(), if fold { 1 } else { 2 }, "norm + head");
            let want = reference_matmul(&wds[2], &normed, rows[2], cols, 1);
            assert_close(
                &format!("head after the norm {what}"),
                &download(&mut b, &o[2], rows[2]),
                &want,
                1e-4,
            );
            assert_close(
                &format!("head's normed input {what}"),
                &download(&mut b, &xb, cols),
                &normed,
                1e-5,
            );

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
                b.ffn_swiglu(
                    &xg,
                    &nwg,
                    1e-5,
                    (1, cols, ff),
                    &mut xb,
                    [&gate_w, &up_w],
                    &mut gate,
                    &mut up,
                )
                .unwrap();
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

/// `W` (f32, `[rows, cols]`) uploaded as an F32 matrix.
fn upload_f32(
    b: &mut WgpuBackend,
    w: &[f32],
    rows: usize,
    cols: usize,
) -> rustorch_model::wgpu::WgpuWeight {
    b.upload_matrix("w", GgmlType::F32, rows, cols, bytemuck::cast_slice(w))
        .unwrap()
}

#[test]
fn qkv_rope_store_and_attention_match_the_cpu_backend() {
    // As the forward pass calls them: `qkv_rope_store` (norm, q/k/v, RoPE of q and k at each
    // row's position, keys and values into each row's sequence), then attention. Steps of two
    // sequences: both prompts interleaved (the RoPE and the store are a dispatch of their own);
    // a decode step of both, and of one (each row of a different sequence: the attention takes
    // the RoPE and the store into its dispatch), split-K past 256 keys. Checked against the
    // CPU's primitives on the same q/k/v (f64 products of its normed rows), GQA 6:2 and 8:2,
    // head_dim 64 and 128 (96 dims rotated). After a folded step, the cache it left is read back
    // by a plain attention of the rotated queries; after a separate one, the buffers hold the
    // normed rows and the rotated queries and keys. Then Phi-3's and Llama 3's RoPE (NEOX pairs
    // with LongRoPE's factors and mscale, another score scale; adjacent pairs with rope_freqs),
    // NEOX of some dims, and head_dim 256 through a sliding window.
    let neox = |n_head, n_head_kv, hd, n_rot| AttnShape {
        rope: RopeStyle::Neox,
        ..AttnShape::llama(n_head, n_head_kv, hd, n_rot, 10000.0)
    };
    let llama_steps = || {
        vec![
            interleave(&[(0, 0, 20), (1, 0, 7)]),
            (vec![1, 0], vec![7, 20]),
            (vec![0], vec![21]),
        ]
    };
    let cases = [
        (
            AttnShape::llama(6, 2, 64, 64, 500000.0),
            false,
            vec![
                interleave(&[(0, 0, 20), (1, 0, 7)]),
                (vec![1, 0], vec![7, 20]),
                (vec![0], vec![21]),
                (vec![1], vec![8]),
            ],
        ),
        (
            AttnShape::llama(8, 2, 128, 96, 10000.0),
            false,
            vec![
                interleave(&[(1, 0, 300), (0, 0, 2)]),
                (vec![0, 1], vec![2, 300]),
                (vec![1], vec![301]),
            ],
        ),
        (
            AttnShape {
                rope_mscale: 1.19,
                scale: 0.2,
                ..neox(6, 2, 64, 64)
            },
            true,
            llama_steps(),
        ),
        (
            AttnShape::llama(6, 2, 64, 64, 500000.0),
            true,
            llama_steps(),
        ),
        (neox(6, 2, 64, 32), false, llama_steps()),
        (
            AttnShape {
                window: 5,
                scale: 1.0 / 16.0,
                ..neox(4, 1, 256, 256)
            },
            false,
            llama_steps(),
        ),
    ];
    let (n_ctx, dim) = (384, 128);
    for subgroups in [false, true] {
        let mut b = gpu(subgroups);
        for (shape, with_factors, steps) in &cases {
            let shape = *shape;
            let (n_head, n_head_kv, hd) = (shape.n_head, shape.n_head_kv, shape.head_dim);
            let (e, kvd) = (n_head * hd, n_head_kv * hd);
            let mut cpu = CpuBackend::new(2);
            let mut rng = Rng(11);
            // Weights scaled so that q, k and v are about as large as the normed rows' values
            // (their sums are of 128 products), the keys three times that so that the softmax is
            // far from uniform (not so far that the CPU's f16 rounding of q and the cache
            // decides it).
            let mut scaled =
                |n: usize, s: f32| -> Vec<f32> { rng.vec(n).iter().map(|x| s * x).collect() };
            let (wq, wk, wv) = (
                scaled(e * dim, 0.15),
                scaled(kvd * dim, 0.45),
                scaled(kvd * dim, 0.15),
            );
            let nw = rng.vec(dim);
            let ff: Vec<f32> = rng
                .vec(shape.n_rot / 2)
                .iter()
                .map(|f| 4.5 + 3.5 * f)
                .collect();
            let factors = with_factors.then(|| {
                (
                    CpuWeight::F32(ff.clone()),
                    b.upload_vector("rope_freqs", &ff).unwrap(),
                )
            });
            let ws = [
                upload_f32(&mut b, &wq, e, dim),
                upload_f32(&mut b, &wk, kvd, dim),
                upload_f32(&mut b, &wv, kvd, dim),
            ];
            let nwg = b.upload_vector("norm", &nw).unwrap();
            let mut ckv = cpu
                .alloc_kv(&KvSpec::side_by_side_of(2, 2, n_ctx, n_head_kv, hd))
                .unwrap();
            let mut gkv = b
                .alloc_kv(&KvSpec::side_by_side_of(2, 2, n_ctx, n_head_kv, hd))
                .unwrap();
            for (seqs, pos) in steps {
                let n = seqs.len();
                let x = rng.vec(n * dim);
                step(&mut cpu, &[], seqs, pos);
                let mut normed = vec![0.0; n * dim];
                cpu.rms_norm(&x, &CpuWeight::F32(nw.clone()), 1e-5, n, dim, &mut normed)
                    .unwrap();
                let mut q = reference_matmul(&wq, &normed, e, dim, n);
                let mut k = reference_matmul(&wk, &normed, kvd, dim, n);
                let v = reference_matmul(&wv, &normed, kvd, dim, n);
                let cf = factors.as_ref().map(|f| &f.0);
                cpu.rope(&mut q, n, n_head, &shape, cf).unwrap();
                cpu.rope(&mut k, n, n_head_kv, &shape, cf).unwrap();
                cpu.kv_store(&mut ckv, 1, &k, &v, n).unwrap();
                let mut want = vec![0.0; n * e];
                cpu.attention(&q, &ckv, 1, n, &shape, &mut want).unwrap();

                let xg = upload(&mut b, &x);
                let mut xb = b.alloc(n * dim).unwrap();
                let (mut qg, mut kg, mut vg) = (
                    b.alloc(n * e).unwrap(),
                    b.alloc(n * kvd).unwrap(),
                    b.alloc(n * kvd).unwrap(),
                );
                let mut out = b.alloc(n * e).unwrap();
                step(&mut b, &[], seqs, pos);
                b.qkv_rope_store(
                    &xg,
                    &nwg,
                    1e-5,
                    (n, dim),
                    &mut xb,
                    [&ws[0], &ws[1], &ws[2]],
                    [&mut qg, &mut kg, &mut vg],
                    &mut gkv,
                    1,
                    &shape,
                    factors.as_ref().map(|f| &f.1),
                )
                .unwrap();
                // The norm folds into the decode mat-vec (subgroups, one row).
                let qkv_ops = if n == 1 && subgroups { 2 } else { 3 };
                assert_eq!(
                    b.pending_ops(),
                    qkv_ops,
                    "norm, q/k/v, and RoPE with the store, of {n} rows"
                );
                b.attention(&qg, &gkv, 1, n, &shape, &mut out).unwrap();
                let mut distinct = seqs.clone();
                distinct.sort_unstable();
                distinct.dedup();
                let fused = distinct.len() == n && b.rope_folds();
                let n_kv = pos
                    .iter()
                    .map(|&p| p as usize + 1 - shape.first_seen(p as usize))
                    .max()
                    .unwrap();
                let split = usize::from(n <= 8 && n_kv > 256);
                assert_eq!(
                    b.pending_ops(),
                    qkv_ops + 1 + split - usize::from(fused),
                    "attention takes the RoPE and the store in: {fused}"
                );
                let what = format!(
                    "of {n} rows at {:?} ({shape:?}, factors {with_factors}, subgroups {subgroups})",
                    &pos[..n.min(4)]
                );
                assert_close(
                    &format!("attention {what}"),
                    &download(&mut b, &out, n * e),
                    &want,
                    2e-2,
                );
                if fused {
                    // The cache holds the rotated keys and the values: a plain attention of
                    // the rotated queries (nothing to fold) reads them back.
                    let qr = upload(&mut b, &q);
                    let mut again = b.alloc(n * e).unwrap();
                    b.attention(&qr, &gkv, 1, n, &shape, &mut again).unwrap();
                    assert_close(
                        &format!("attention from the cache {what}"),
                        &download(&mut b, &again, n * e),
                        &want,
                        2e-2,
                    );
                } else {
                    assert_close(
                        &format!("normed rows {what}"),
                        &download(&mut b, &xb, n * dim),
                        &normed,
                        1e-5,
                    );
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
                    assert_close(
                        &format!("v {what}"),
                        &download(&mut b, &vg, n * kvd),
                        &v,
                        1e-4,
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
        .alloc_kv(&KvSpec::side_by_side_of(32, 1, 1 << 30, 8, 128))
        .err()
        .expect("a KV cache of 2^30 positions")
        .to_string();
    assert!(msg.contains("use a smaller -c"), "{msg}");
    // A pool of 2^24 blocks (1 TiB of keys a layer) for one short sequence, and an empty pool.
    let pool = KvSpec {
        n_blocks: 1 << 24,
        ..KvSpec::side_by_side_of(2, 1, 64, 8, 128)
    };
    let msg = b
        .alloc_kv(&pool)
        .err()
        .expect("a pool of 1 TiB")
        .to_string();
    assert!(
        msg.contains("a pool of 268435456 slots") && msg.contains("one buffer may bind"),
        "{msg}"
    );
    let empty = KvSpec {
        n_blocks: 0,
        ..KvSpec::side_by_side_of(2, 1, 64, 8, 128)
    };
    let msg = b.alloc_kv(&empty).err().expect("no blocks").to_string();
    assert!(msg.contains("holds nothing"), "{msg}");
    // The backend still works afterwards.
    let x = upload(&mut b, &[1.0, 2.0]);
    assert_eq!(download(&mut b, &x, 2), [1.0, 2.0]);
}

/// Bytes a weight's buffer holds at most in [`weights_larger_than_a_binding_run_in_parts`].
const SMALL_BINDING: u64 = 4096;

#[test]
fn weights_larger_than_a_binding_run_in_parts() {
    // With weight buffers held to 4 KiB (the `max_binding` option, as a GPU's binding limit
    // would), 37 rows of 512 take 3 parts in Q4_K (288-byte rows), 4 to 6 in Q4_0, Q6_K and
    // Q8_0, 13 in F16 and 37 in F32 (a row a part). The matmul (decode mat-vec, one partial
    // prompt tile, two tiles) runs once per part, each writing its rows' columns, and gives the
    // values of the same weight in one buffer exactly (the same kernel over the same rows), and
    // the scalar reference's within the usual tolerance; the embedding reads each token from its
    // part. Then the fused operations over weights in parts: the norm folded into the output
    // head's parts, q/k/v with one weight in parts, the residual add, and gate/up (SwiGLU then
    // apart). A row larger than the limit is an error.
    let (rows, cols) = (37, 512);
    // The prompt matmul without subgroups, and the decode mat-vec (where subgroups are on).
    for (subgroups, matvec) in [(false, false), (true, true)] {
        let mut whole = gpu_with(subgroups, matvec);
        let mut parted = WgpuBackend::new(Options {
            subgroups,
            matvec,
            max_binding: Some(SMALL_BINDING),
            // Every dispatch of an op stays pending, so that the test counts them.
            submit_every: 0,
            ..Options::from_env()
        })
        .unwrap();
        let mut cpu = CpuBackend::new(1);
        let mut rng = Rng(0x51ce);
        let what = format!("(subgroups {subgroups}, mat-vec {matvec})");
        for (ty, want_parts) in [
            (GgmlType::Q4_K, 3),
            (GgmlType::Q6_K, 5),
            (GgmlType::Q8_0, 6),
            (GgmlType::Q4_0, 4),
            (GgmlType::F16, 13),
            (GgmlType::F32, 37),
        ] {
            let bytes = quantize(ty, &rng.vec(rows * cols), rows);
            let wd = dequantize(ty, &bytes, rows, cols);
            let w1 = whole.upload_matrix("w", ty, rows, cols, &bytes).unwrap();
            let wp = parted.upload_matrix("w", ty, rows, cols, &bytes).unwrap();
            assert_eq!((w1.parts(), wp.parts()), (1, want_parts), "{ty} parts");
            for n in [1, 3, 11] {
                let x = rng.vec(n * cols);
                let (xw, xp) = (upload(&mut whole, &x), upload(&mut parted, &x));
                let mut ow = whole.alloc(n * rows).unwrap();
                let mut op = parted.alloc(n * rows).unwrap();
                whole.matmul(&w1, &xw, n, &mut ow).unwrap();
                parted.matmul(&wp, &xp, n, &mut op).unwrap();
                assert_eq!(parted.pending_ops(), want_parts, "{ty}: a dispatch a part");
                let got = download(&mut parted, &op, n * rows);
                assert_eq!(
                    got,
                    download(&mut whole, &ow, n * rows),
                    "{ty} matmul in parts {what}, n {n}"
                );
                assert_close(
                    &format!("{ty} matmul in parts {what}, n {n}"),
                    &got,
                    &reference_matmul(&wd, &x, rows, cols, n),
                    1e-4,
                );
            }
            // Tokens of every part, the first and last rows among them.
            let tokens = [36u32, 0, 12, 25, 13, 36];
            step(&mut parted, &tokens, &[0; 6], &[0, 1, 2, 3, 4, 5]);
            let mut out = parted.alloc(tokens.len() * cols).unwrap();
            parted.embed(&wp, tokens.len(), &mut out).unwrap();
            let got = download(&mut parted, &out, tokens.len() * cols);
            for (t, &tok) in tokens.iter().enumerate() {
                let tok = tok as usize;
                assert_eq!(
                    &got[t * cols..(t + 1) * cols],
                    &wd[tok * cols..(tok + 1) * cols],
                    "{ty} embedding of token {tok} from its part {what}"
                );
            }
            step(&mut parted, &[rows as u32], &[0], &[0]);
            assert!(
                parted.embed(&wp, 1, &mut out).is_err(),
                "{ty}: a token past a table in parts"
            );
        }

        // The fused operations over weights in parts (Q4_K: 14 rows a part; 8 rows fit one).
        let q4k = |b: &mut WgpuBackend, bytes: &[u8], r: usize| {
            b.upload_matrix("w", GgmlType::Q4_K, r, cols, bytes)
                .unwrap()
        };
        let mk = |rng: &mut Rng, r: usize| {
            let bytes = quantize(GgmlType::Q4_K, &rng.vec(r * cols), r);
            let wd = dequantize(GgmlType::Q4_K, &bytes, r, cols);
            (bytes, wd)
        };
        let (head, small, gate, up) = (
            mk(&mut rng, 37),
            mk(&mut rng, 8),
            mk(&mut rng, 30),
            mk(&mut rng, 30),
        );
        let head_w = q4k(&mut parted, &head.0, 37);
        let small_w = q4k(&mut parted, &small.0, 8);
        let (gate_w, up_w) = (q4k(&mut parted, &gate.0, 30), q4k(&mut parted, &up.0, 30));
        assert_eq!((head_w.parts(), small_w.parts(), gate_w.parts()), (3, 1, 3));
        let nw = rng.vec(cols);
        let nwg = parted.upload_vector("norm", &nw).unwrap();
        let fold = subgroups && matvec;
        for n in [1, 3] {
            let x = rng.vec(n * cols);
            let mut normed = vec![0.0; n * cols];
            cpu.rms_norm(&x, &CpuWeight::F32(nw.clone()), 1e-5, n, cols, &mut normed)
                .unwrap();
            let xg = upload(&mut parted, &x);
            let what = format!("{what}, n {n}");

            // The output head: the norm folds into each part's mat-vec.
            let mut xb = parted.alloc(n * cols).unwrap();
            let mut logits = parted.alloc(n * 37).unwrap();
            parted
                .norm_matmuls(
                    &xg,
                    &nwg,
                    1e-5,
                    (n, cols),
                    &mut xb,
                    &[&head_w],
                    &mut [&mut logits],
                )
                .unwrap();
            let folds = fold && n == 1;
            assert_eq!(parted.pending_ops(), 3 + usize::from(!folds), "norm + head");
            assert_close(
                &format!("head in parts after the norm {what}"),
                &download(&mut parted, &logits, n * 37),
                &reference_matmul(&head.1, &normed, 37, cols, n),
                1e-4,
            );
            assert_close(
                &format!("normed input of a head in parts {what}"),
                &download(&mut parted, &xb, n * cols),
                &normed,
                1e-5,
            );

            // q/k/v with k in parts: q and v on their own, k a dispatch a part.
            let mut o: Vec<WgpuBuf> = [8, 37, 8]
                .iter()
                .map(|&r| parted.alloc(n * r).unwrap())
                .collect();
            let [oq, ok, ov] = &mut o[..] else {
                unreachable!()
            };
            parted
                .norm_matmuls(
                    &xg,
                    &nwg,
                    1e-5,
                    (n, cols),
                    &mut xb,
                    &[&small_w, &head_w, &small_w],
                    &mut [oq, ok, ov],
                )
                .unwrap();
            assert_eq!(
                parted.pending_ops(),
                5 + usize::from(!folds),
                "norm + q/k/v"
            );
            for (i, (wd, r)) in [(&small.1, 8), (&head.1, 37), (&small.1, 8)]
                .into_iter()
                .enumerate()
            {
                assert_close(
                    &format!("q/k/v {i} with k in parts {what}"),
                    &download(&mut parted, &o[i], n * r),
                    &reference_matmul(wd, &normed, r, cols, n),
                    1e-4,
                );
            }

            // The residual add folds into each part's dispatch.
            let resid = rng.vec(n * 37);
            let mut rg = upload(&mut parted, &resid);
            let mut proj = parted.alloc(n * 37).unwrap();
            parted
                .matmul_add(&head_w, &xg, (n, 37), &mut rg, &mut proj)
                .unwrap();
            assert_eq!(parted.pending_ops(), 3, "matmul + add in parts");
            let p = reference_matmul(&head.1, &x, 37, cols, n);
            let want: Vec<f32> = resid.iter().zip(&p).map(|(r, p)| r + p).collect();
            assert_close(
                &format!("residual add of a weight in parts {what}"),
                &download(&mut parted, &rg, n * 37),
                &want,
                1e-4,
            );

            // Gate/up in parts: each apart, then SwiGLU.
            let (mut g, mut u) = (parted.alloc(n * 30).unwrap(), parted.alloc(n * 30).unwrap());
            parted
                .ffn_swiglu(
                    &xg,
                    &nwg,
                    1e-5,
                    (n, cols, 30),
                    &mut xb,
                    [&gate_w, &up_w],
                    &mut g,
                    &mut u,
                )
                .unwrap();
            assert_eq!(
                parted.pending_ops(),
                7 + usize::from(!folds),
                "norm, gate/up, SwiGLU"
            );
            let gr = reference_matmul(&gate.1, &normed, 30, cols, n);
            let ur = reference_matmul(&up.1, &normed, 30, cols, n);
            let want: Vec<f32> = gr
                .iter()
                .zip(&ur)
                .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            assert_close(
                &format!("gate/up in parts and SwiGLU {what}"),
                &download(&mut parted, &g, n * 30),
                &want,
                1e-4,
            );
        }

        // One row larger than a buffer may hold.
        let wide = 2048;
        let w = rng.vec(wide);
        let msg = parted
            .upload_matrix("wide", GgmlType::F32, 1, wide, bytemuck::cast_slice(&w))
            .err()
            .expect("a row of 8 KiB in buffers of 4 KiB")
            .to_string();
        assert!(msg.contains("wide") && msg.contains("one row"), "{msg}");
    }
}

#[test]
fn tiled_prompt_matmul_matches_the_reference() {
    // The prompt matmul from 16 tokens on (`tile_min`) goes through 64-row x 64-token tiles in
    // workgroup memory. Every format; rows that end mid-tile; token counts at, below and past a
    // tile's 64; three weights in one dispatch whose rows share tiles (mode 0), the residual add
    // (mode 1), gate/up with SwiGLU (mode 2: tiles of 32 gate rows and their up rows); and a
    // weight in parts. Each against the f64 reference, and equal to the 8-token kernel's
    // results within rounding (a backend with `tile_min` 0). With f32 tiles, and with f16 ones
    // where the adapter has `shader-f16` (lavapipe has): weights and activations rounded to f16
    // (2^-11 relative each), so within 2e-3 of the sum of |products| rather than 1e-5.
    // Also the tiles multiplied by cooperative matrices (`matmul_coop.wgsl`, f16 tiles too): by
    // the hardware's where the adapter has them (not lavapipe: the device runs that), and by the
    // emulation of 16 x 16 and 8 x 8 ones (the latter with the prefetch), which checks the
    // kernel's tiles, modes and layouts.
    let opts = |tile_min: usize,
                max_binding: Option<u64>,
                (f16, tile_prefetch, coop): (bool, bool, CoopMode)| Options {
        subgroups: coop == CoopMode::On,
        matvec: false,
        tile_min,
        max_binding,
        f16,
        tile_prefetch,
        coop,
        submit_every: 0,
        ..Options::from_env()
    };
    let mut rng = Rng(0x7a11);
    // The tiles with the next step's loads before the sums (`tile_prefetch`) too.
    for (f16, pf, coop) in [
        (false, false, CoopMode::Off),
        (true, false, CoopMode::Off),
        (false, true, CoopMode::Off),
        (false, false, CoopMode::Emulated(16)),
        (false, true, CoopMode::Emulated(8)),
        (false, false, CoopMode::On),
        (false, true, CoopMode::On),
    ] {
        let variant = (f16, pf, coop);
        let mut b = WgpuBackend::new(opts(16, None, variant)).unwrap();
        let mut plain = WgpuBackend::new(opts(0, None, variant)).unwrap();
        match (coop, b.coop()) {
            (CoopMode::Off, None) => {}
            (CoopMode::On, None) => {
                println!(
                    "tiled matmul by cooperative matrices not run: {} has none of f16 inputs \
                     and f32 sums, or no subgroups of 32 (the emulated ones ran)",
                    b.adapter()
                );
                continue;
            }
            (_, Some(c)) => println!("tiled matmul by cooperative matrices: {c:?}"),
            (_, None) => panic!(
                "{coop:?}: no emulated cooperative matrices on {}",
                b.adapter()
            ),
        }
        let tol = if f16 || coop != CoopMode::Off {
            2e-3
        } else {
            1e-5
        };
        let check = |what: &str, got: &[f32], want: &[f32], mags: &[f64]| {
            for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mags).enumerate() {
                assert!(
                    ((g - w).abs() as f64) <= tol * m + 1e-6,
                    "{what} (f16 {f16}, prefetch {pf}, {coop:?}): element {i}: gpu {g} vs reference {w}"
                );
            }
        };
        for &ty in shaders::FORMATS {
            let (rows, cols) = (100, 512);
            let bytes = quantize(ty, &rng.vec(rows * cols), rows);
            let wd = dequantize(ty, &bytes, rows, cols);
            let w = b.upload_matrix("w", ty, rows, cols, &bytes).unwrap();
            let wp = plain.upload_matrix("w", ty, rows, cols, &bytes).unwrap();
            for n in [16, 64, 65, 130] {
                let x = rng.vec(n * cols);
                let (xb, xp) = (upload(&mut b, &x), upload(&mut plain, &x));
                let mut out = b.alloc(n * rows).unwrap();
                let mut outp = plain.alloc(n * rows).unwrap();
                b.matmul(&w, &xb, n, &mut out).unwrap();
                plain.matmul(&wp, &xp, n, &mut outp).unwrap();
                let got = download(&mut b, &out, n * rows);
                let (want, mag) = reference_matmul_mags(&wd, &x, rows, cols, n);
                check(&format!("{ty} tiled matmul, n {n}"), &got, &want, &mag);
                let other = download(&mut plain, &outp, n * rows);
                check(
                    &format!("{ty} tiled vs 8-token kernel, n {n}"),
                    &got,
                    &other,
                    &mag,
                );
            }
        }

        // Three weights in one dispatch: 100 + 40 + 30 rows, tiles across their boundaries.
        let (cols, n) = (256, 70);
        let rows = [100, 40, 30];
        let mut ws = Vec::new();
        let mut wds = Vec::new();
        for &r in &rows {
            let bytes = quantize(GgmlType::Q4_K, &rng.vec(r * cols), r);
            wds.push(dequantize(GgmlType::Q4_K, &bytes, r, cols));
            ws.push(
                b.upload_matrix("w", GgmlType::Q4_K, r, cols, &bytes)
                    .unwrap(),
            );
        }
        let x = rng.vec(n * cols);
        let xg = upload(&mut b, &x);
        let mut o: Vec<WgpuBuf> = rows.iter().map(|&r| b.alloc(n * r).unwrap()).collect();
        {
            let [o0, o1, o2] = &mut o[..] else {
                unreachable!()
            };
            b.matmuls(&[&ws[0], &ws[1], &ws[2]], &xg, n, &mut [o0, o1, o2])
                .unwrap();
        }
        assert_eq!(b.pending_ops(), 1, "three weights, one dispatch");
        for i in 0..3 {
            let (want, mag) = reference_matmul_mags(&wds[i], &x, rows[i], cols, n);
            let got = download(&mut b, &o[i], n * rows[i]);
            check(&format!("tiled matmuls: weight {i}"), &got, &want, &mag);
        }

        // The residual add, and gate/up with SwiGLU (80 rows: a partial 32-row tile).
        let ff = 80;
        let (bg, bu) = (
            quantize(GgmlType::Q6_K, &rng.vec(ff * cols), ff),
            quantize(GgmlType::Q6_K, &rng.vec(ff * cols), ff),
        );
        let (wgd, wud) = (
            dequantize(GgmlType::Q6_K, &bg, ff, cols),
            dequantize(GgmlType::Q6_K, &bu, ff, cols),
        );
        let gate_w = b
            .upload_matrix("gate", GgmlType::Q6_K, ff, cols, &bg)
            .unwrap();
        let up_w = b
            .upload_matrix("up", GgmlType::Q6_K, ff, cols, &bu)
            .unwrap();
        let resid = rng.vec(n * ff);
        let mut rg = upload(&mut b, &resid);
        let mut proj = b.alloc(n * ff).unwrap();
        b.matmul_add(&gate_w, &xg, (n, ff), &mut rg, &mut proj)
            .unwrap();
        assert_eq!(
            b.pending_ops(),
            1,
            "matmul and residual add in one dispatch"
        );
        let (g, gmag) = reference_matmul_mags(&wgd, &x, ff, cols, n);
        let want: Vec<f32> = resid.iter().zip(&g).map(|(r, g)| r + g).collect();
        check(
            "tiled residual add",
            &download(&mut b, &rg, n * ff),
            &want,
            &gmag,
        );
        check(
            "tiled residual's projection",
            &download(&mut b, &proj, n * ff),
            &g,
            &gmag,
        );

        let nw = rng.vec(cols);
        let nwg = b.upload_vector("norm", &nw).unwrap();
        let mut cpu = CpuBackend::new(1);
        let mut normed = vec![0.0; n * cols];
        cpu.rms_norm(&x, &CpuWeight::F32(nw), 1e-5, n, cols, &mut normed)
            .unwrap();
        let mut xb = b.alloc(n * cols).unwrap();
        let mut gate = b.alloc(n * ff).unwrap();
        let mut up = b.alloc(n * ff).unwrap();
        b.ffn_swiglu(
            &xg,
            &nwg,
            1e-5,
            (n, cols, ff),
            &mut xb,
            [&gate_w, &up_w],
            &mut gate,
            &mut up,
        )
        .unwrap();
        // The matmuls' reference takes the GPU's normed rows, checked against the CPU's first.
        let normed_gpu = download(&mut b, &xb, n * cols);
        assert_close("tiled swiglu's normed input", &normed_gpu, &normed, 1e-5);
        let normed = normed_gpu;
        let (g, gmag) = reference_matmul_mags(&wgd, &normed, ff, cols, n);
        let (u, umag) = reference_matmul_mags(&wud, &normed, ff, cols, n);
        check(
            "tiled swiglu's up",
            &download(&mut b, &up, n * ff),
            &u,
            &umag,
        );
        // silu(g) * u moves by at most ~1.1 |u| per unit of g and |g| per unit of u.
        let want: Vec<f32> = g
            .iter()
            .zip(&u)
            .map(|(&g, &u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let mag: Vec<f64> = (0..n * ff)
            .map(|i| {
                gmag[i] * 1.1 * (u[i].abs() as f64 + 1.0) + umag[i] * (g[i].abs() as f64 + 1.0)
            })
            .collect();
        check(
            "tiled swiglu",
            &download(&mut b, &gate, n * ff),
            &want,
            &mag,
        );

        // A weight in parts (4 KiB buffers: 14 Q4_K rows of 512 each, 3 parts of 37 rows).
        let mut parted = WgpuBackend::new(opts(16, Some(SMALL_BINDING), variant)).unwrap();
        let (rows, cols, n) = (37, 512, 40);
        let bytes = quantize(GgmlType::Q4_K, &rng.vec(rows * cols), rows);
        let wd = dequantize(GgmlType::Q4_K, &bytes, rows, cols);
        let wp = parted
            .upload_matrix("w", GgmlType::Q4_K, rows, cols, &bytes)
            .unwrap();
        assert_eq!(wp.parts(), 3);
        let x = rng.vec(n * cols);
        let xp = upload(&mut parted, &x);
        let mut op = parted.alloc(n * rows).unwrap();
        parted.matmul(&wp, &xp, n, &mut op).unwrap();
        let (want, mag) = reference_matmul_mags(&wd, &x, rows, cols, n);
        check(
            "tiled matmul in parts",
            &download(&mut parted, &op, n * rows),
            &want,
            &mag,
        );
    }
}

/// `v` as the 8-bit activations of `quantize_q8.wgsl` see it: blocks of 32 quantised to
/// round(v / d) with d = max |v| / 127 (ties to even, as WGSL's `round`), then dequantised.
fn q8_row(v: &[f32]) -> Vec<f32> {
    v.chunks(32)
        .flat_map(|blk| {
            let amax = blk.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = if d > 0.0 { 1.0 / d } else { 0.0 };
            blk.iter()
                .map(move |&x| (x * id).round_ties_even().clamp(-128.0, 127.0) * d)
        })
        .collect()
}

#[test]
fn decode_matvec_over_8bit_activations_matches_the_reference() {
    // `wgpu.q8`: q/k/v (mixed Q4_K / Q6_K, norm folded into the quantisation), one weight
    // without a norm (the output head), gate/up + SwiGLU, and the residual add: each a
    // quantisation dispatch and a mat-vec whose packed 8-bit dots must give the f32 dot of the
    // weights with the quantised activations. A format without an 8-bit dot (Q4_0) keeps the f32
    // mat-vec (one dispatch with its norm).
    let mut b = WgpuBackend::new(Options {
        q8: true,
        f16: false,
        ..Options::from_env()
    })
    .unwrap_or_else(|e| panic!("no GPU adapter for the wgpu tests ({e})"));
    let mut cpu = CpuBackend::new(1);
    let mut rng = Rng(88);
    for cols in [256, 1280, 2816] {
        let x = rng.vec(cols);
        let nw = rng.vec(cols);
        let mut normed = vec![0.0; cols];
        cpu.rms_norm(&x, &CpuWeight::F32(nw.clone()), 1e-5, 1, cols, &mut normed)
            .unwrap();
        let nq = q8_row(&normed);
        let nwg = b.upload_vector("norm", &nw).unwrap();
        let xg = upload(&mut b, &x);
        let what = format!("(q8, {cols} columns)");
        // Against the quantised activations to 1e-4 of the products' magnitudes, and against
        // the f32 activations to 1% of them (what 8-bit activations cost).
        let check = |what: &str, got: &[f32], wd: &[f32], xf: &[f32], xq: &[f32], rows| {
            let (want, mags) = reference_matmul_mags(wd, xq, rows, cols, 1);
            let mags: Vec<f32> = mags.iter().map(|&m| m as f32).collect();
            let exact = reference_matmul(wd, xf, rows, cols, 1);
            for i in 0..rows {
                assert!(
                    (got[i] - want[i]).abs() <= 1e-4 * mags[i],
                    "{what}: row {i}: gpu {} vs quantised reference {} (magnitude {})",
                    got[i],
                    want[i],
                    mags[i]
                );
                assert!(
                    (got[i] - exact[i]).abs() <= 1e-2 * mags[i],
                    "{what}: row {i}: gpu {} vs f32 reference {}",
                    got[i],
                    exact[i]
                );
            }
        };

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
        let [o0, o1, o2] = &mut o[..] else {
            unreachable!()
        };
        b.norm_matmuls(
            &xg,
            &nwg,
            1e-5,
            (1, cols),
            &mut xb,
            &[&ws[0], &ws[1], &ws[2]],
            &mut [o0, o1, o2],
        )
        .unwrap();
        assert_eq!(b.pending_ops(), 2, "quantisation + q/k/v {what}");
        let xbd = download(&mut b, &xb, cols);
        assert_close(&format!("normed input {what}"), &xbd, &normed, 1e-5);
        for i in 0..3 {
            let got = download(&mut b, &o[i], rows[i]);
            check(
                &format!("weight {i} ({}) {what}", types[i]),
                &got,
                &wds[i],
                &normed,
                &nq,
                rows[i],
            );
        }

        // One Q6_K weight over x as it is (no norm).
        let xq = q8_row(&x);
        b.matmuls(&[&ws[2]], &xg, 1, &mut [&mut o[2]]).unwrap();
        assert_eq!(b.pending_ops(), 2, "quantisation + head {what}");
        let got = download(&mut b, &o[2], rows[2]);
        check(&format!("head {what}"), &got, &wds[2], &x, &xq, rows[2]);

        // The attention output's mat-vec and the residual add.
        let res0 = rng.vec(64);
        let mut res = upload(&mut b, &res0);
        let mut tmp = b.alloc(64).unwrap();
        b.matmul_add(&ws[0], &xg, (1, 64), &mut res, &mut tmp)
            .unwrap();
        assert_eq!(b.pending_ops(), 2, "quantisation + matmul_add {what}");
        let got: Vec<f32> = download(&mut b, &res, 64)
            .iter()
            .zip(&res0)
            .map(|(r, r0)| r - r0)
            .collect();
        check(&format!("residual add {what}"), &got, &wds[0], &x, &xq, 64);

        // Gate/up + SwiGLU of block dots, and of Q4_0 (no 8-bit dot: the f32 mat-vec).
        for (tg, tu) in [
            (GgmlType::Q4_K, GgmlType::Q4_K),
            (GgmlType::Q6_K, GgmlType::Q4_K),
            (GgmlType::Q4_0, GgmlType::Q4_K),
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
            b.ffn_swiglu(
                &xg,
                &nwg,
                1e-5,
                (1, cols, ff),
                &mut xb,
                [&gate_w, &up_w],
                &mut gate,
                &mut up,
            )
            .unwrap();
            let q8 = tg != GgmlType::Q4_0;
            assert_eq!(
                b.pending_ops(),
                if q8 { 2 } else { 1 },
                "{tg}/{tu} gate/up {what}"
            );
            let (gd, ud) = (dequantize(tg, &bg, ff, cols), dequantize(tu, &bu, ff, cols));
            let xin = if q8 { &nq } else { &normed };
            let (g, gm) = reference_matmul_mags(&gd, xin, ff, cols, 1);
            let (u, um) = reference_matmul_mags(&ud, xin, ff, cols, 1);
            let (gm, um): (Vec<f32>, Vec<f32>) = (
                gm.iter().map(|&m| m as f32).collect(),
                um.iter().map(|&m| m as f32).collect(),
            );
            let got_u = download(&mut b, &up, ff);
            let got_g = download(&mut b, &gate, ff);
            for i in 0..ff {
                assert!(
                    (got_u[i] - u[i]).abs() <= 1e-4 * um[i],
                    "{tg}/{tu} up row {i} {what}: gpu {} vs {}",
                    got_u[i],
                    u[i]
                );
                let want = g[i] / (1.0 + (-g[i]).exp()) * u[i];
                let tol = 1e-4 * (gm[i] * (1.0 + u[i].abs()) + um[i] * (1.0 + g[i].abs()));
                assert!(
                    (got_g[i] - want).abs() <= tol,
                    "{tg}/{tu} swiglu row {i} {what}: gpu {} vs {want}",
                    got_g[i]
                );
            }
            assert_close(
                &format!("normed input, gate/up {what}"),
                &download(&mut b, &xb, cols),
                &normed,
                1e-5,
            );
        }
    }
}
