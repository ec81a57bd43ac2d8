//! The sampler allocates nothing per token: its own binary, so the counting allocator sees
//! only this test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rustorch_engine::sampler::{Mt19937, Sampler, SamplerConfig};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn no_allocation_per_token() {
    let n_vocab = 49_152;
    let mut rng = Mt19937::new(3);
    let steps: Vec<Vec<f32>> = (0..8)
        .map(|_| {
            (0..n_vocab)
                .map(|_| (rng.next_f64() * 16.0 - 8.0) as f32)
                .collect()
        })
        .collect();
    let history: Vec<u32> = (0..500).map(|i| (i * 97) % n_vocab as u32).collect();
    let configs = [
        SamplerConfig {
            repeat_penalty: 1.1,
            ..SamplerConfig::default()
        },
        // No top-k: top-p's partial sort and min-p's unsorted path.
        SamplerConfig {
            top_k: 0,
            repeat_penalty: 1.1,
            ..SamplerConfig::default()
        },
        SamplerConfig {
            top_k: 0,
            top_p: 1.0,
            ..SamplerConfig::default()
        },
        SamplerConfig::greedy(),
    ];
    for cfg in configs {
        let mut s = Sampler::new(cfg.clone(), n_vocab);
        let before = ALLOCS.load(Ordering::Relaxed);
        for logits in &steps {
            std::hint::black_box(s.sample(logits, &history));
        }
        assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0, "{cfg:?}");
    }
}
