//! The multi-sequence engine on SmolLM2 on the CPU: interleaved sequences give what each gives
//! alone, cancelled requests free their blocks, a small pool preempts and still finishes every
//! request the same, the prefix cache serves a repeated prompt, stop texts end the output.

use std::sync::Arc;

use rustorch_engine::engine::{
    Engine, EngineConfig, EngineHandle, Event, FinishReason, Request, Stream, SubmitError,
    MAX_TOP_LOGPROBS,
};
use rustorch_gguf::GgufFile;
use rustorch_model::{Device, KV_BLOCK};

mod support;
use support::{agree_to_near_tie, greedy, prompts, smollm2};

fn engine(file: &Arc<GgufFile>, n_seq: usize, n_blocks: usize, cfg: EngineConfig) -> Engine {
    support::engine_on(Device::Cpu, file, n_seq, n_blocks, cfg)
}

fn alone(file: &Arc<GgufFile>, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    support::alone_on(Device::Cpu, file, prompt, n)
}

/// Eight sequences stepped together: each step evaluates every running sequence in one forward
/// pass (8 decode rows a step once all prompts are in), and each sequence's greedy tokens equal
/// its solo run's up to its first near-tie. The CPU's arithmetic differs with the batch: a
/// lone decode row goes through the one-row mat-vec, several rows through the grouped matmul
/// (its activation rows quantized and summed in groups of eight), so logits agree to rounding,
/// not bit for bit.
#[test]
fn eight_interleaved_sequences_match_each_alone() {
    let file = smollm2();
    let n = 24;
    let mut e = engine(&file, 8, 8 * 32, EngineConfig::default());
    let streams: Vec<Stream> = prompts(&file)
        .into_iter()
        .map(|p| e.submit(greedy(p, n)).unwrap())
        .collect();
    let mut rows = Vec::new();
    while !e.idle() {
        rows.push(e.step());
    }
    // One prompt step with all eight prompts, then one step of eight decode rows per token.
    assert_eq!(rows.len(), n, "steps: {rows:?}");
    assert!(rows[1..].iter().all(|&r| r == 8), "rows per step: {rows:?}");
    let c = e.counters();
    assert_eq!((c.running, c.waiting, c.blocks_used), (0, 0, 0));
    let mut compared = 0;
    for (i, (s, p)) in streams.into_iter().zip(prompts(&file)).enumerate() {
        let (ids, _, fin) = s.collect_blocking();
        assert_eq!(fin.unwrap().reason, FinishReason::Length);
        let (want, margins) = alone(&file, &p, n);
        compared += agree_to_near_tie(&format!("sequence {i}"), &ids, &want, &margins);
    }
    assert!(compared >= 40, "only {compared} tokens compared");
}

/// Requests cancelled by dropping their stream, mid-prompt and mid-generation, free their
/// blocks before the next step; after 1,000 requests with random cancellations no block is held
/// by any sequence (cached prefix blocks may stay, unheld).
#[test]
fn cancelled_requests_free_their_blocks() {
    let file = smollm2();
    let cfg = EngineConfig {
        step_tokens: 48,
        ..EngineConfig::default()
    };
    let mut e = engine(&file, 16, 96, cfg);
    let base = prompts(&file);
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    // Mid-prompt: a long prompt (more than a step's budget), dropped after its first step.
    let long: Vec<u32> = base.iter().flatten().copied().cycle().take(150).collect();
    let s = e.submit(greedy(long.clone(), 8)).unwrap();
    e.step();
    let c = e.counters();
    assert!(c.blocks_used > 0 && c.running == 1, "{c:?}");
    drop(s);
    e.step();
    assert_eq!(
        e.counters().blocks_used,
        0,
        "a request cancelled mid-prompt holds blocks"
    );
    // Mid-generation.
    let s = e.submit(greedy(base[0].clone(), 50)).unwrap();
    for _ in 0..5 {
        e.step();
    }
    drop(s);
    e.step();
    let c = e.counters();
    assert_eq!((c.blocks_used, c.running), (0, 0), "{c:?}");

    let mut live: Vec<Stream> = Vec::new();
    let (mut submitted, mut done) = (0, 0);
    while submitted < 1000 || !e.idle() {
        while submitted < 1000 && live.len() < 40 {
            let r = next();
            let mut prompt = base[(r % 8) as usize].clone();
            if r % 5 == 0 {
                prompt = long[..(r as usize % 140) + 2].to_vec();
            }
            live.push(
                e.submit(greedy(prompt, 1 + (r >> 8) as usize % 12))
                    .unwrap(),
            );
            submitted += 1;
        }
        e.step();
        // Drop a random few; read the others' finished events.
        live.retain_mut(|s| {
            if next() % 7 == 0 {
                return false;
            }
            loop {
                match s.try_next() {
                    Some(Event::Done(_)) => {
                        done += 1;
                        return false;
                    }
                    Some(_) => continue,
                    None => return true,
                }
            }
        });
    }
    let c = e.counters();
    assert_eq!((c.running, c.waiting, c.blocks_used), (0, 0, 0), "{c:?}");
    assert!(
        c.cancelled > 100 && done > 100,
        "{c:?}, {done} read to the end"
    );
    assert_eq!(c.blocks_free, 96);
}

/// A pool too small for all requests at once preempts sequences (their blocks freed, their
/// tokens prefilled again later) and finishes every request with the tokens a large pool gives.
#[test]
fn a_small_pool_preempts_and_finishes_everything_the_same() {
    let file = smollm2();
    let n = 40;
    let run = |n_blocks: usize| {
        let cfg = EngineConfig {
            prefix_cache: false,
            ..EngineConfig::default()
        };
        let mut e = engine(&file, 8, n_blocks, cfg);
        let streams: Vec<Stream> = prompts(&file)
            .into_iter()
            .map(|p| e.submit(greedy(p, n)).unwrap())
            .collect();
        e.run_until_idle();
        let outs: Vec<Vec<u32>> = streams
            .into_iter()
            .map(|s| {
                let (ids, _, fin) = s.collect_blocking();
                assert_eq!(fin.unwrap().reason, FinishReason::Length);
                ids
            })
            .collect();
        (outs, e.counters())
    };
    let (big, c) = run(8 * 32);
    assert_eq!(c.preempted, 0);
    // 8 sequences of up to 50 positions need 32 blocks at the end: 14 blocks make them take
    // turns.
    let (small, c) = run(14);
    assert!(c.preempted > 0, "{c:?}");
    assert_eq!(c.blocks_used, 0);
    for (i, p) in prompts(&file).iter().enumerate() {
        let (_, margins) = alone(&file, p, n);
        agree_to_near_tie(&format!("sequence {i}"), &small[i], &big[i], &margins);
    }
}

/// A second request with the same long prompt maps the cached blocks instead of computing them,
/// and generates what the first did.
#[test]
fn the_prefix_cache_serves_a_repeated_prompt() {
    let file = smollm2();
    let mut e = engine(&file, 4, 256, EngineConfig::default());
    let system: Vec<u32> = prompts(&file)
        .concat()
        .into_iter()
        .cycle()
        .take(300)
        .collect();
    let first = e.submit(greedy(system.clone(), 16)).unwrap();
    e.run_until_idle();
    let (ids1, _, f1) = first.collect_blocking();
    let f1 = f1.unwrap();
    assert_eq!(f1.cached_tokens, 0);
    let second = e.submit(greedy(system.clone(), 16)).unwrap();
    e.run_until_idle();
    let (ids2, _, f2) = second.collect_blocking();
    let f2 = f2.unwrap();
    // Every full block but the one holding the last prompt token.
    assert_eq!(f2.cached_tokens, (system.len() - 1) / KV_BLOCK * KV_BLOCK);
    assert_eq!(ids1, ids2);
    let c = e.counters();
    assert!(c.prefix_hits >= (300 / KV_BLOCK) as u64, "{c:?}");
    assert!(c.blocks_cached > 0 && c.blocks_used == 0, "{c:?}");
}

/// A stop text ends the output before it; text that only begins like a stop text is released.
#[test]
fn stop_texts_end_the_output() {
    let file = smollm2();
    let mut e = engine(&file, 2, 64, EngineConfig::default());
    let p = prompts(&file)[0].clone();
    let (_, full, _) = e
        .submit(greedy(p.clone(), 24))
        .unwrap()
        .collect_blocking_after(&mut e);
    let words: Vec<&str> = full.split_whitespace().collect();
    assert!(words.len() >= 4, "{full:?}");
    let stop = format!(" {}", words[3]);
    let req = Request {
        stop: vec![stop.clone(), "never appears: zq".into()],
        ..greedy(p, 24)
    };
    let (_, text, fin) = e.submit(req).unwrap().collect_blocking_after(&mut e);
    assert_eq!(fin.unwrap().reason, FinishReason::Stop);
    let cut = full.find(&stop).unwrap();
    assert_eq!(text, full[..cut]);
}

/// The engine on its own thread: requests from several threads, each stream read as it comes.
#[test]
fn the_engine_thread_serves_several_clients() {
    let file = smollm2();
    let handle = EngineHandle::spawn(engine(&file, 4, 128, EngineConfig::default()));
    let threads: Vec<_> = prompts(&file)
        .into_iter()
        .map(|p| {
            let h = handle.clone();
            std::thread::spawn(move || h.submit(greedy(p, 8)).unwrap().collect_blocking())
        })
        .collect();
    for t in threads {
        let (ids, _, fin) = t.join().unwrap();
        assert_eq!(ids.len(), 8);
        assert_eq!(fin.unwrap().reason, FinishReason::Length);
    }
    // The counters are published after each step (the streams end within it).
    let t0 = std::time::Instant::now();
    while handle.counters().finished < 8 && t0.elapsed().as_secs() < 5 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(handle.counters().finished, 8);
    // A bad request is refused at once.
    assert!(handle.submit(greedy(Vec::new(), 1)).is_err());
}

trait CollectAfter {
    fn collect_blocking_after(
        self,
        e: &mut Engine,
    ) -> (Vec<u32>, String, Option<rustorch_engine::engine::Finish>);
}

impl CollectAfter for Stream {
    fn collect_blocking_after(
        self,
        e: &mut Engine,
    ) -> (Vec<u32>, String, Option<rustorch_engine::engine::Finish>) {
        e.run_until_idle();
        self.collect_blocking()
    }
}

/// A sequence the whole pool cannot hold ends with an error instead of preempting itself
/// forever; a full queue refuses requests, and requests cancelled while waiting leave it.
#[test]
fn a_pool_too_small_and_a_full_queue_are_errors() {
    let file = smollm2();
    let cfg = EngineConfig {
        max_waiting: 3,
        ..EngineConfig::default()
    };
    let mut e = engine(&file, 1, 4, cfg);
    let p = prompts(&file)[1].clone();
    let s = e.submit(greedy(p.clone(), 200)).unwrap();
    let mut steps = 0;
    while !e.idle() {
        e.step();
        steps += 1;
        assert!(steps < 200, "no end");
    }
    let (ids, _, fin) = s.collect_blocking();
    let fin = fin.unwrap();
    assert_eq!(fin.reason, FinishReason::Error);
    assert!(fin.error.unwrap().contains("cannot hold"));
    assert!(ids.len() < 64);
    assert_eq!(e.counters().blocks_used, 0);

    // The free sequence slot takes one at the next step; three more may wait.
    let waiting: Vec<Stream> = (0..4)
        .map(|_| e.submit(greedy(p.clone(), 1)).unwrap())
        .collect();
    let err = e.submit(greedy(p.clone(), 1)).err().unwrap();
    assert!(
        matches!(err, rustorch_engine::engine::SubmitError::QueueFull { .. }),
        "{err}"
    );
    drop(waiting);
    e.step();
    assert_eq!(e.counters().waiting, 0);
    assert!(e.submit(greedy(p, 1)).is_ok());
}

/// Every event of a stream run to its end on `e`.
fn events_after(s: Stream, e: &mut Engine) -> Vec<Event> {
    e.run_until_idle();
    let mut s = s;
    std::iter::from_fn(|| s.try_next()).collect()
}

/// Logprobs on request: each token's log-probability under the model (greedy: the top one), its
/// most likely alternatives sorted, nothing when not asked.
#[test]
fn logprobs_come_with_each_token_when_asked() {
    let file = smollm2();
    let mut e = engine(&file, 2, 64, EngineConfig::default());
    let p = prompts(&file)[0].clone();
    let req = Request {
        logprobs: Some(5),
        ..greedy(p.clone(), 8)
    };
    let events = events_after(e.submit(req).unwrap(), &mut e);
    let mut n = 0;
    for ev in &events {
        let Event::Token { id, logprob, .. } = ev else {
            continue;
        };
        n += 1;
        let lp = logprob.as_ref().expect("asked for logprobs");
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0], (*id, lp.logprob), "{lp:?}");
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1), "{lp:?}");
        assert!(lp.top.iter().all(|t| t.1 <= 0.0));
        let mass: f32 = lp.top.iter().map(|t| t.1.exp()).sum();
        assert!(mass <= 1.0 + 1e-4 && mass > 0.0, "{mass}");
    }
    assert_eq!(n, 8);
    // k = 0: the chosen token's alone; None: nothing.
    let req = Request {
        logprobs: Some(0),
        ..greedy(p.clone(), 2)
    };
    for ev in events_after(e.submit(req).unwrap(), &mut e) {
        if let Event::Token { logprob, .. } = ev {
            let lp = logprob.unwrap();
            assert!(lp.top.is_empty() && lp.logprob <= 0.0);
        }
    }
    for ev in events_after(e.submit(greedy(p, 2)).unwrap(), &mut e) {
        if let Event::Token { logprob, .. } = ev {
            assert_eq!(logprob, None);
        }
    }
}

/// Too many alternatives, a bias on a token outside the vocabulary and a NaN bias are refused,
/// naming the field.
#[test]
fn bad_logprobs_and_bias_are_refused() {
    let file = smollm2();
    let mut e = engine(&file, 1, 32, EngineConfig::default());
    let p = prompts(&file)[0].clone();
    let n_vocab = e.model().config().n_vocab as u32;
    let refused = |e: &mut Engine, req: Request, field: &str| match e.submit(req) {
        Err(SubmitError::Sampling(m)) => assert!(m.contains(field), "{m}"),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("accepted"),
    };
    let req = Request {
        logprobs: Some(MAX_TOP_LOGPROBS + 1),
        ..greedy(p.clone(), 1)
    };
    refused(&mut e, req, "top_logprobs");
    let mut req = greedy(p.clone(), 1);
    req.sampling.logit_bias = vec![(3, 1.0), (n_vocab, -100.0)];
    refused(&mut e, req, "logit_bias");
    let mut req = greedy(p.clone(), 1);
    req.sampling.logit_bias = vec![(3, f32::NAN)];
    refused(&mut e, req, "logit-bias");
    let mut req = greedy(p, 1);
    req.logprobs = Some(MAX_TOP_LOGPROBS);
    req.sampling.logit_bias = vec![(n_vocab - 1, f32::NEG_INFINITY)];
    assert!(e.submit(req).is_ok());
}

/// A banned token is never generated, even when greedy would pick it; a +100 bias forces one.
#[test]
fn logit_bias_bans_and_forces_tokens() {
    let file = smollm2();
    let mut e = engine(&file, 1, 32, EngineConfig::default());
    let p = prompts(&file)[0].clone();
    let (ids, _, _) = e
        .submit(greedy(p.clone(), 6))
        .unwrap()
        .collect_blocking_after(&mut e);
    let mut req = greedy(p.clone(), 6);
    req.sampling.logit_bias = vec![(ids[0], -100.0)];
    let (banned, _, _) = e.submit(req).unwrap().collect_blocking_after(&mut e);
    assert_eq!(banned.len(), 6);
    assert!(!banned.contains(&ids[0]), "{banned:?} vs {ids:?}");
    let tok = rustorch_tokenizer::Tokenizer::from_gguf(&file).unwrap();
    let the = tok.encode(" the", false, false)[0];
    let mut req = greedy(p, 6);
    req.sampling.temp = 1.0;
    req.sampling.logit_bias = vec![(the, 100.0)];
    let (forced, _, _) = e.submit(req).unwrap().collect_blocking_after(&mut e);
    assert_eq!(forced, [the; 6]);
}

/// Shutdown ends the running request (after its held-back text) and the waiting ones with
/// `Shutdown`, and refuses later submits.
#[test]
fn shutdown_ends_every_request() {
    let file = smollm2();
    let handle = EngineHandle::spawn(engine(&file, 1, 32, EngineConfig::default()));
    let p = prompts(&file)[1].clone();
    let mut running = handle
        .submit(Request {
            stop: vec!["never appears: zq".into()],
            ..greedy(p.clone(), 400)
        })
        .unwrap();
    let waiting: Vec<Stream> = (0..2)
        .map(|_| handle.submit(greedy(p.clone(), 400)).unwrap())
        .collect();
    // The first token: the request is running.
    assert!(matches!(running.next_blocking(), Some(Event::Token { .. })));
    handle.shutdown();
    let (_, _, fin) = running.collect_blocking();
    let fin = fin.unwrap();
    assert_eq!(fin.reason, FinishReason::Shutdown);
    assert!(fin.completion_tokens < 400);
    for s in waiting {
        let (ids, _, fin) = s.collect_blocking();
        assert_eq!(ids, []);
        assert_eq!(fin.unwrap().reason, FinishReason::Shutdown);
    }
    assert_eq!(
        handle.submit(greedy(p, 1)).err(),
        Some(SubmitError::Stopped)
    );
}

/// `submit_async` from an async task, the stream read with `next().await`.
#[test]
fn submit_async_serves_async_tasks() {
    let file = smollm2();
    let handle = EngineHandle::spawn(engine(&file, 2, 64, EngineConfig::default()));
    let p = prompts(&file)[2].clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let (n, fin) = rt.block_on(async {
        let mut s = handle.submit_async(greedy(p.clone(), 5)).await.unwrap();
        let mut n = 0;
        loop {
            match s.next().await {
                Some(Event::Token { .. }) => n += 1,
                Some(Event::Done(f)) => return (n, f),
                Some(Event::Text(_)) => {}
                None => panic!("no end"),
            }
        }
    });
    assert_eq!((n, fin.reason), (5, FinishReason::Length));
    let err = rt.block_on(handle.submit_async(greedy(Vec::new(), 1)));
    assert_eq!(err.err(), Some(SubmitError::EmptyPrompt));
    handle.shutdown();
    let err = rt.block_on(handle.submit_async(greedy(p, 1)));
    assert_eq!(err.err(), Some(SubmitError::Stopped));
}
