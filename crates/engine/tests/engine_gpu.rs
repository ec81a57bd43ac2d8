//! The multi-sequence engine on a GPU backend whose KV cache is paged as the CPU's is: wgpu
//! (Vulkan; Metal on macOS) with the `wgpu` feature, CUDA with `cuda`. Sequences on a pool
//! smaller than their contexts side by side (blocks taken as they grow, so each sequence's blocks
//! lie scattered between the others') give the greedy tokens each gives alone, also on a pool too
//! small for all at once (sequences preempted, their blocks reused by others, their tokens
//! prefilled again); the prefix cache serves a repeated prompt from its cached blocks. On the
//! tiny random-weight Qwen2 file of 32-wide heads (`tests/data/tiny-arch`, as the CUDA kernels
//! need; greedy choices rarely near ties), so that lavapipe runs hundreds of steps in seconds;
//! `crates/model/tests/wgpu_model.rs` and `cuda.rs` check scattered and shared blocks on
//! SmolLM2. CUDA needs a GPU: without a driver each test says so and returns, unless
//! `RUSTORCH_REQUIRE_CUDA=1` (the device script sets it).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_engine::engine::{EngineConfig, FinishReason, Stream};
use rustorch_gguf::GgufFile;
use rustorch_model::{Device, KV_BLOCK};

mod support;
use support::{agree_to_near_tie, alone_on, engine_on, greedy};

/// The device under test: CUDA in a `cuda` build (None without a driver, unless one is
/// required), else wgpu's.
fn gpu_device() -> Option<Device> {
    if cfg!(feature = "cuda") {
        let present = rustorch_model::load(tiny_qwen2_hd32(), Device::Cuda, 16).is_ok();
        if !present {
            assert!(
                std::env::var_os("RUSTORCH_REQUIRE_CUDA").is_none(),
                "RUSTORCH_REQUIRE_CUDA is set but the CUDA backend cannot load a model"
            );
            eprintln!("no usable CUDA driver or GPU here: skipped");
        }
        return present.then_some(Device::Cuda);
    }
    Some(if cfg!(target_os = "macos") {
        Device::Metal
    } else {
        Device::Vulkan
    })
}

/// `tests/data/tiny-arch/qwen2-hd32.gguf`, from the checkout this was built in or, for a test binary
/// carried to another machine, from the working directory (the repository root there).
fn tiny_qwen2_hd32() -> Arc<GgufFile> {
    let rel = "tests/data/tiny-arch/qwen2-hd32.gguf";
    let built = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    let p = if built.exists() {
        built
    } else {
        PathBuf::from(rel)
    };
    Arc::new(GgufFile::open(p).unwrap())
}

/// Prompts of 5 to 40 token ids of the tiny vocabulary.
fn prompts(n: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            let len = 5 + (i * 11) % 36;
            (0..len)
                .map(|j| 3 + ((i * 97 + j * 31) % 317) as u32)
                .collect()
        })
        .collect()
}

/// Eight sequences of up to 100 positions (up to 7 blocks each, 45 together at the end) stepped
/// together over pools of 64 blocks (256 side by side: they run together) and of 20 (they take
/// turns, preempted and prefilled again): every sequence's greedy tokens equal its solo run's up
/// to its first near-tie.
#[test]
fn sequences_on_a_small_pool_match_each_alone() {
    let Some(dev) = gpu_device() else { return };
    let file = tiny_qwen2_hd32();
    let n = 60;
    let prompts = prompts(8);
    let solo: Vec<(Vec<u32>, Vec<f32>)> =
        prompts.iter().map(|p| alone_on(dev, &file, p, n)).collect();
    for n_blocks in [64, 20] {
        let cfg = EngineConfig {
            prefix_cache: false,
            ..EngineConfig::default()
        };
        let mut e = engine_on(dev, &file, 8, n_blocks, cfg);
        assert!(!e.model().kv_spec().side_by_side());
        let streams: Vec<Stream> = (prompts.iter())
            .map(|p| e.submit(greedy(p.clone(), n)).unwrap())
            .collect();
        e.run_until_idle();
        let c = e.counters();
        assert_eq!((c.running, c.blocks_used), (0, 0), "{c:?}");
        assert_eq!(c.preempted > 0, n_blocks == 20, "{c:?}");
        let mut compared = 0;
        for (i, (s, (want, margins))) in streams.into_iter().zip(&solo).enumerate() {
            let (ids, _, fin) = s.collect_blocking();
            assert_eq!(fin.unwrap().reason, FinishReason::Length);
            let what = format!("pool of {n_blocks}, sequence {i}");
            compared += agree_to_near_tie(&what, &ids, want, margins);
        }
        eprintln!(
            "pool of {n_blocks} blocks: {compared} tokens compared, {} preemptions",
            c.preempted
        );
        assert!(compared >= 200, "only {compared} tokens compared");
    }
}

/// A second request with the same long prompt maps the first's cached blocks instead of
/// computing them, and generates what the first did.
#[test]
fn the_prefix_cache_serves_a_repeated_prompt() {
    let Some(dev) = gpu_device() else { return };
    let file = tiny_qwen2_hd32();
    let mut e = engine_on(dev, &file, 2, 64, EngineConfig::default());
    let system: Vec<u32> = prompts(8).concat().into_iter().cycle().take(300).collect();
    let first = e.submit(greedy(system.clone(), 16)).unwrap();
    e.run_until_idle();
    let (ids1, _, f1) = first.collect_blocking();
    assert_eq!(f1.unwrap().cached_tokens, 0);
    let second = e.submit(greedy(system.clone(), 16)).unwrap();
    e.run_until_idle();
    let (ids2, _, f2) = second.collect_blocking();
    // Every full block but the one holding the last prompt token.
    let cached = (system.len() - 1) / KV_BLOCK * KV_BLOCK;
    assert_eq!(f2.unwrap().cached_tokens, cached);
    assert_eq!(ids1, ids2);
    let c = e.counters();
    assert!(c.prefix_hits >= (cached / KV_BLOCK) as u64, "{c:?}");
}
