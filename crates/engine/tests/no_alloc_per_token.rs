//! Generation allocates nothing per token once warm: every buffer of the forward pass, the
//! sampler and the text decoder is sized up front (or grows once to the context).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustorch_engine::sampler::SamplerConfig;
use rustorch_engine::session::Session;
use rustorch_gguf::GgufFile;
use rustorch_tokenizer::Tokenizer;

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
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

fn model() -> PathBuf {
    let dir = std::env::var_os("RUSTORCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        });
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

#[test]
fn decoding_allocates_nothing_per_token() {
    let file = Arc::new(GgufFile::open(model()).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let m = rustorch_model::load(Arc::clone(&file), rustorch_model::Device::Cpu, 256).unwrap();
    let mut session = Session::new(
        m,
        tok,
        SamplerConfig {
            temp: 0.8,
            seed: 1,
            ..SamplerConfig::default()
        },
    );
    let prompt = session
        .tokenizer()
        .encode("Once upon a time, in a small village,", false, true);
    session.feed(&prompt).unwrap();
    // Warm up: first calls size the buffers.
    session.generate(8, |_| {}).unwrap();
    let count = |session: &mut Session, n: usize| {
        let before = ALLOCS.load(Ordering::Relaxed);
        let (ids, _) = session.generate(n, |_| {}).unwrap();
        assert_eq!(ids.len(), n, "generation stopped early");
        ALLOCS.load(Ordering::Relaxed) - before
    };
    let short = count(&mut session, 16);
    let long = count(&mut session, 96);
    // A call reserves its result, its text buffer and the decoder's byte buffer; tokens add nothing.
    assert!(short <= 4, "{short} allocations for 16 tokens");
    assert_eq!(
        long, short,
        "96 tokens allocated {long} times, 16 tokens {short} times"
    );
}
