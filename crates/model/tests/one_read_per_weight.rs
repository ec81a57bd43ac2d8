//! A step of many sequences reads each weight once: a backend that counts the weights its matmuls
//! take shows the same count per step with one decode row as with eight sequences' rows.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::cpu::{CpuKv, CpuWeight};
use rustorch_model::{
    load_on, AttnShape, Backend, Batch, CpuBackend, Device, KvSize, KvSpec, Logits, ModelError,
    Step,
};

mod support;

/// The CPU backend, counting the weights every matmul reads.
struct Counting {
    cpu: CpuBackend,
    weights: Arc<AtomicUsize>,
}

type Buf = Vec<f32>;

impl Backend for Counting {
    type Buf = Buf;
    type Weight = CpuWeight;
    type Kv = CpuKv;

    fn device(&self) -> Device {
        Device::Cpu
    }
    fn upload(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<CpuWeight, ModelError> {
        self.cpu.upload(file, name)
    }
    fn upload_rows(
        &mut self,
        file: &Arc<GgufFile>,
        name: &str,
        rows: Range<usize>,
    ) -> Result<CpuWeight, ModelError> {
        self.cpu.upload_rows(file, name, rows)
    }
    fn alloc(&mut self, len: usize) -> Result<Buf, ModelError> {
        self.cpu.alloc(len)
    }
    fn alloc_kv(&mut self, spec: &KvSpec) -> Result<CpuKv, ModelError> {
        self.cpu.alloc_kv(spec)
    }
    fn map_blocks(
        &mut self,
        kv: &mut CpuKv,
        seq: usize,
        first: usize,
        blocks: &[u32],
    ) -> Result<(), ModelError> {
        self.cpu.map_blocks(kv, seq, first, blocks)
    }
    fn begin_step(&mut self, batch: &Batch, head: &[u32]) -> Result<Step, ModelError> {
        self.cpu.begin_step(batch, head)
    }
    fn embed(&mut self, table: &CpuWeight, n: usize, out: &mut Buf) -> Result<(), ModelError> {
        self.cpu.embed(table, n, out)
    }
    fn rms_norm(
        &mut self,
        x: &Buf,
        weight: &CpuWeight,
        eps: f32,
        n: usize,
        dim: usize,
        out: &mut Buf,
    ) -> Result<(), ModelError> {
        self.cpu.rms_norm(x, weight, eps, n, dim, out)
    }
    fn matmul(
        &mut self,
        w: &CpuWeight,
        x: &Buf,
        n: usize,
        out: &mut Buf,
    ) -> Result<(), ModelError> {
        self.weights.fetch_add(1, Ordering::Relaxed);
        self.cpu.matmul(w, x, n, out)
    }
    fn matmuls(
        &mut self,
        ws: &[&CpuWeight],
        x: &Buf,
        n: usize,
        outs: &mut [&mut Buf],
    ) -> Result<(), ModelError> {
        self.weights.fetch_add(ws.len(), Ordering::Relaxed);
        self.cpu.matmuls(ws, x, n, outs)
    }
    fn rope(
        &mut self,
        x: &mut Buf,
        n: usize,
        n_heads: usize,
        shape: &AttnShape,
        factors: Option<&CpuWeight>,
    ) -> Result<(), ModelError> {
        self.cpu.rope(x, n, n_heads, shape, factors)
    }
    fn kv_store(
        &mut self,
        kv: &mut CpuKv,
        layer: usize,
        k: &Buf,
        v: &Buf,
        n: usize,
    ) -> Result<(), ModelError> {
        self.cpu.kv_store(kv, layer, k, v, n)
    }
    fn attention(
        &mut self,
        q: &Buf,
        kv: &CpuKv,
        layer: usize,
        n: usize,
        shape: &AttnShape,
        out: &mut Buf,
    ) -> Result<(), ModelError> {
        self.cpu.attention(q, kv, layer, n, shape, out)
    }
    fn swiglu(&mut self, gate: &mut Buf, up: &Buf, len: usize) -> Result<(), ModelError> {
        self.cpu.swiglu(gate, up, len)
    }
    fn geglu(&mut self, gate: &mut Buf, up: &Buf, len: usize) -> Result<(), ModelError> {
        self.cpu.geglu(gate, up, len)
    }
    fn add(&mut self, x: &mut Buf, y: &Buf, len: usize) -> Result<(), ModelError> {
        self.cpu.add(x, y, len)
    }
    fn add_bias(
        &mut self,
        x: &mut Buf,
        bias: &CpuWeight,
        n: usize,
        dim: usize,
    ) -> Result<(), ModelError> {
        self.cpu.add_bias(x, bias, n, dim)
    }
    fn scale(&mut self, x: &mut Buf, s: f32, len: usize) -> Result<(), ModelError> {
        self.cpu.scale(x, s, len)
    }
    fn copy_within(
        &mut self,
        x: &mut Buf,
        src: usize,
        dst: usize,
        len: usize,
    ) -> Result<(), ModelError> {
        self.cpu.copy_within(x, src, dst, len)
    }
    fn read(&mut self, x: &Buf, offset: usize, out: &mut [f32]) -> Result<(), ModelError> {
        self.cpu.read(x, offset, out)
    }
}

#[test]
fn eight_sequences_read_each_weight_once_per_step() {
    let file = support::smollm2();
    let weights = Arc::new(AtomicUsize::new(0));
    let backend = Counting {
        cpu: CpuBackend::new(2),
        weights: weights.clone(),
    };
    let size = KvSize {
        n_seq: 8,
        seq_ctx: 64,
        n_blocks: 0,
    };
    let mut m = load_on(backend, file, size).unwrap();
    let n_layer = m.config().n_layer;
    // q, k, v, o, gate, up, down per layer and the output head.
    let per_step = 7 * n_layer + 1;
    let mut out = Vec::new();
    for s in 0..8u32 {
        let tokens = [1, 100 + s, 200 + s];
        let batch = Batch {
            tokens: &tokens,
            seqs: &[s; 3],
            pos: &[0, 1, 2],
        };
        m.eval_batch(&batch, &[2], &mut out).unwrap();
    }
    // One sequence's decode row.
    weights.store(0, Ordering::Relaxed);
    m.eval(&[5], 3, Logits::Last, &mut out).unwrap();
    assert_eq!(weights.load(Ordering::Relaxed), per_step);
    // Eight sequences' decode rows in one step: the same weights, read once.
    weights.store(0, Ordering::Relaxed);
    let seqs: Vec<u32> = (0..8).collect();
    let batch = Batch {
        tokens: &[7; 8],
        seqs: &seqs,
        pos: &[3; 8],
    };
    let rows: Vec<u32> = (0..8).collect();
    m.eval_batch(&batch, &rows, &mut out).unwrap();
    assert_eq!(
        weights.load(Ordering::Relaxed),
        per_step,
        "one read per weight per step"
    );
    assert_eq!(out.len(), 8 * m.config().n_vocab);
}
