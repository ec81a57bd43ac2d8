//! Sampler behaviour on small synthetic logits.

use rustorch_engine::sampler::{argmax, Mt19937, Sampler, SamplerConfig, SamplerError};

/// Only temperature: the draw is from softmax(logits / temp) over the whole vocabulary.
fn plain(temp: f32, seed: u64) -> SamplerConfig {
    SamplerConfig {
        temp,
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        repeat_penalty: 1.0,
        repeat_last_n: 64,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        logit_bias: Vec::new(),
        seed,
    }
}

fn random_logits(n: usize, seed: u32) -> Vec<f32> {
    let mut rng = Mt19937::new(seed);
    (0..n)
        .map(|_| (rng.next_f64() * 20.0 - 10.0) as f32)
        .collect()
}

/// log-probabilities, so that softmax(logits) == probs.
fn logits_of(probs: &[f64]) -> Vec<f32> {
    probs.iter().map(|p| p.ln() as f32).collect()
}

fn kept_ids(s: &mut Sampler, logits: &[f32], history: &[u32]) -> Vec<u32> {
    let mut ids: Vec<u32> = s.candidates(logits, history).iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids
}

fn frequencies(s: &mut Sampler, logits: &[f32], draws: usize) -> Vec<f64> {
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..draws {
        counts[s.sample(logits, &[]) as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / draws as f64).collect()
}

#[test]
fn defaults_are_llama_cpp() {
    let c = SamplerConfig::default();
    assert_eq!((c.temp, c.top_k, c.top_p, c.min_p), (0.8, 40, 0.95, 0.05));
    assert_eq!((c.repeat_penalty, c.repeat_last_n), (1.0, 64));
    assert!(c.validate().is_ok());
}

#[test]
fn validate_names_the_flag() {
    let bad = [
        (
            SamplerConfig {
                temp: -0.1,
                ..Default::default()
            },
            "--temp",
        ),
        (
            SamplerConfig {
                temp: f32::NAN,
                ..Default::default()
            },
            "--temp",
        ),
        (
            SamplerConfig {
                temp: f32::INFINITY,
                ..Default::default()
            },
            "--temp",
        ),
        (
            SamplerConfig {
                top_p: 0.0,
                ..Default::default()
            },
            "--top-p",
        ),
        (
            SamplerConfig {
                top_p: 1.5,
                ..Default::default()
            },
            "--top-p",
        ),
        (
            SamplerConfig {
                top_p: f32::NAN,
                ..Default::default()
            },
            "--top-p",
        ),
        (
            SamplerConfig {
                min_p: -0.01,
                ..Default::default()
            },
            "--min-p",
        ),
        (
            SamplerConfig {
                min_p: 1.01,
                ..Default::default()
            },
            "--min-p",
        ),
        (
            SamplerConfig {
                repeat_penalty: 0.0,
                ..Default::default()
            },
            "--repeat-penalty",
        ),
        (
            SamplerConfig {
                repeat_penalty: f32::NAN,
                ..Default::default()
            },
            "--repeat-penalty",
        ),
    ];
    for (cfg, flag) in bad {
        let err = cfg.validate().unwrap_err();
        assert!(err.to_string().starts_with(flag), "{err}");
    }
    assert_eq!(
        SamplerConfig {
            temp: -1.0,
            ..Default::default()
        }
        .validate(),
        Err(SamplerError::Temperature(-1.0))
    );
    let edge = SamplerConfig {
        temp: 0.0,
        top_p: 1.0,
        min_p: 1.0,
        top_k: 0,
        ..Default::default()
    };
    assert!(edge.validate().is_ok());
}

#[test]
fn argmax_first_maximum() {
    assert_eq!(argmax(&[0.1, 3.0, -2.0, 3.0]), 1);
    assert_eq!(argmax(&[5.0]), 0);
    assert_eq!(argmax(&[]), 0);
    assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 2.0]), 3);
    assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
}

#[test]
fn greedy_picks_the_max() {
    for seed in 0..20 {
        let logits = random_logits(1000, seed);
        let mut s = Sampler::new(SamplerConfig::greedy(), logits.len());
        assert_eq!(s.sample(&logits, &[]), argmax(&logits));
        let c = s.candidates(&logits, &[]);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].id, c[0].p), (argmax(&logits), 1.0));
    }
}

#[test]
fn top_k_one_equals_greedy() {
    for seed in 0..20 {
        let logits = random_logits(2000, seed);
        let cfg = SamplerConfig {
            top_k: 1,
            seed: u64::from(seed),
            ..Default::default()
        };
        let mut s = Sampler::new(cfg, logits.len());
        for _ in 0..5 {
            assert_eq!(s.sample(&logits, &[]), argmax(&logits));
        }
    }
}

#[test]
fn top_k_keeps_the_k_largest() {
    let logits = [0.5, 3.0, -1.0, 2.0, 2.5, 0.0];
    let cfg = SamplerConfig {
        top_k: 3,
        ..plain(1.0, 1)
    };
    let mut s = Sampler::new(cfg, logits.len());
    assert_eq!(kept_ids(&mut s, &logits, &[]), [1, 3, 4]);
    // Never draws outside the kept set.
    let f = frequencies(&mut s, &logits, 5000);
    assert_eq!(f[0] + f[2] + f[5], 0.0);
}

#[test]
fn top_p_cuts_at_the_mass() {
    let probs = [0.05, 0.5, 0.15, 0.3];
    let logits = logits_of(&probs);
    let keep = |top_p: f32| {
        let mut s = Sampler::new(
            SamplerConfig {
                top_p,
                ..plain(1.0, 3)
            },
            4,
        );
        kept_ids(&mut s, &logits, &[])
    };
    assert_eq!(keep(0.4), [1]);
    assert_eq!(keep(0.75), [1, 3]);
    assert_eq!(keep(0.85), [1, 2, 3]);
    assert_eq!(keep(0.99), [0, 1, 2, 3]);

    // The draw renormalises over what is kept: 0.5 / 0.8 and 0.3 / 0.8.
    let mut s = Sampler::new(
        SamplerConfig {
            top_p: 0.75,
            ..plain(1.0, 3)
        },
        4,
    );
    let f = frequencies(&mut s, &logits, 20_000);
    assert_eq!(f[0] + f[2], 0.0);
    assert!((f[1] - 0.625).abs() < 0.015, "{f:?}");
}

#[test]
fn min_p_cuts_relative_to_the_best() {
    let probs = [0.05, 0.5, 0.15, 0.3];
    let logits = logits_of(&probs);
    let keep = |min_p: f32, top_k: usize| {
        let cfg = SamplerConfig {
            min_p,
            top_k,
            ..plain(1.0, 5)
        };
        let mut s = Sampler::new(cfg, 4);
        kept_ids(&mut s, &logits, &[])
    };
    // Sorted path (after top-k) and unsorted path must agree on the set.
    for top_k in [0, 40] {
        assert_eq!(keep(0.05, top_k), [0, 1, 2, 3]);
        assert_eq!(keep(0.2, top_k), [1, 2, 3]);
        assert_eq!(keep(0.5, top_k), [1, 3]);
        assert_eq!(keep(0.7, top_k), [1]);
        assert_eq!(keep(1.0, top_k), [1]);
    }
    // Unsorted input keeps vocabulary order, as llama.cpp's unsorted min-p.
    let mut s = Sampler::new(
        SamplerConfig {
            min_p: 0.2,
            ..plain(1.0, 5)
        },
        4,
    );
    let order: Vec<u32> = s.candidates(&logits, &[]).iter().map(|c| c.id).collect();
    assert_eq!(order, [1, 2, 3]);

    let mut s = Sampler::new(
        SamplerConfig {
            min_p: 0.5,
            ..plain(1.0, 5)
        },
        4,
    );
    let f = frequencies(&mut s, &logits, 20_000);
    assert_eq!(f[0] + f[2], 0.0);
    assert!((f[1] - 0.625).abs() < 0.015, "{f:?}");
}

#[test]
fn chain_order_top_k_then_top_p_then_min_p() {
    // top-k 3 leaves {0.4, 0.3, 0.2} renormalised to {4/9, 3/9, 2/9}; top-p 0.7 then keeps
    // two (4/9 + 3/9 >= 0.7) where over the full list it would have kept the same two;
    // min-p 0.8 leaves only those within 0.8 of the best: 3/4 < 0.8, so one.
    let logits = logits_of(&[0.4, 0.3, 0.2, 0.1]);
    let cfg = SamplerConfig {
        top_k: 3,
        top_p: 0.7,
        min_p: 0.0,
        ..plain(1.0, 0)
    };
    let mut s = Sampler::new(cfg.clone(), 4);
    assert_eq!(kept_ids(&mut s, &logits, &[]), [0, 1]);
    let mut s = Sampler::new(SamplerConfig { min_p: 0.8, ..cfg }, 4);
    assert_eq!(kept_ids(&mut s, &logits, &[]), [0]);
    // top-p measures mass after top-k: over 4 tokens 0.4 + 0.3 < 0.75, after top-k 2 it is 1.
    let cfg = SamplerConfig {
        top_k: 2,
        top_p: 0.75,
        ..plain(1.0, 0)
    };
    let mut s = Sampler::new(cfg, 4);
    assert_eq!(kept_ids(&mut s, &logits, &[]), [0, 1]);
}

#[test]
fn temperature_scales_after_filtering() {
    // Candidates come out with logits divided by temp and probabilities of softmax(l / temp).
    let logits = [1.0f32, 2.0, 3.0];
    let mut s = Sampler::new(plain(0.5, 0), 3);
    let c = s.candidates(&logits, &[]).to_vec();
    let z: f64 = logits.iter().map(|&l| (f64::from(l) / 0.5).exp()).sum();
    for c in c {
        assert_eq!(c.logit, logits[c.id as usize] / 0.5);
        let want = (f64::from(logits[c.id as usize]) / 0.5).exp() / z;
        assert!((f64::from(c.p) - want).abs() < 1e-6);
    }
}

#[test]
fn penalty_changes_the_ranking() {
    let logits = [2.0f32, 1.9, -1.0, -1.1, 0.0];
    let cfg = SamplerConfig {
        repeat_penalty: 1.5,
        ..SamplerConfig::greedy()
    };
    let mut s = Sampler::new(cfg.clone(), logits.len());
    assert_eq!(s.sample(&logits, &[]), 0);
    // Positive logit divided: 2.0 / 1.5 < 1.9.
    assert_eq!(s.sample(&logits, &[0]), 1);
    // Both penalised: 2.0 / 1.5 still beats 1.9 / 1.5.
    assert_eq!(s.sample(&logits, &[0, 1]), 0);
    assert_eq!(s.sample(&logits, &[1]), 0);

    // Look at the penalised logits directly (temp 1, no filters).
    let cfg = SamplerConfig {
        repeat_penalty: 1.5,
        ..plain(1.0, 0)
    };
    let mut s = Sampler::new(cfg, logits.len());
    let penalised = |s: &mut Sampler, history: &[u32]| {
        let mut v = [0f32; 5];
        for c in s.candidates(&logits, history) {
            v[c.id as usize] = c.logit;
        }
        v
    };
    // Negative logit multiplied: -1.0 * 1.5 < -1.1; zero stays zero.
    assert_eq!(penalised(&mut s, &[2, 4]), [2.0, 1.9, -1.5, -1.1, 0.0]);
    // Each distinct token once, however often it repeats.
    assert_eq!(
        penalised(&mut s, &[0, 0, 0]),
        [2.0 / 1.5, 1.9, -1.0, -1.1, 0.0]
    );
    // Ids outside the vocabulary are ignored; the marks are cleared between calls.
    assert_eq!(penalised(&mut s, &[99, u32::MAX]), logits);

    // Only the last repeat_last_n tokens count.
    let cfg = SamplerConfig {
        repeat_penalty: 1.5,
        repeat_last_n: 2,
        ..plain(1.0, 0)
    };
    let mut s = Sampler::new(cfg, logits.len());
    assert_eq!(
        penalised(&mut s, &[0, 1, 2, 3]),
        [2.0, 1.9, -1.5, -1.1 * 1.5, 0.0]
    );
    // repeat_last_n 0 switches it off.
    let cfg = SamplerConfig {
        repeat_penalty: 1.5,
        repeat_last_n: 0,
        ..plain(1.0, 0)
    };
    let mut s = Sampler::new(cfg, logits.len());
    assert_eq!(penalised(&mut s, &[0, 1, 2, 3]), logits);
}

#[test]
fn same_seed_same_tokens() {
    let run = |seed: u64| {
        let mut s = Sampler::new(
            SamplerConfig {
                seed,
                temp: 1.5,
                ..Default::default()
            },
            500,
        );
        let mut history = vec![1u32, 2, 3];
        for step in 0..200 {
            let logits = random_logits(500, step);
            let t = s.sample(&logits, &history);
            history.push(t);
        }
        history
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));

    // reset() restarts the stream.
    let logits = random_logits(500, 1);
    let mut s = Sampler::new(plain(2.0, 11), 500);
    let first: Vec<u32> = (0..50).map(|_| s.sample(&logits, &[])).collect();
    s.reset();
    let again: Vec<u32> = (0..50).map(|_| s.sample(&logits, &[])).collect();
    assert_eq!(first, again);
}

#[test]
fn draw_uses_llama_cpp_random_stream() {
    // std::mt19937(42) through uniform_real_distribution<double> gives 0.7965..., 0.1834...;
    // over five equal candidates in vocabulary order that selects index floor(5u).
    let logits = [0.0f32; 5];
    let mut s = Sampler::new(plain(1.0, 42), 5);
    assert_eq!(s.sample(&logits, &[]), 3);
    assert_eq!(s.sample(&logits, &[]), 0);
    assert_eq!(s.sample(&logits, &[]), 3);
    assert_eq!(s.sample(&logits, &[]), 2);
}

#[test]
fn temperature_sampling_matches_softmax() {
    let logits = [1.0f32, 2.0, 0.5, 3.0, -1.0];
    for temp in [0.7f32, 1.0, 2.5] {
        let mut s = Sampler::new(plain(temp, 1234), logits.len());
        let draws = 20_000;
        let f = frequencies(&mut s, &logits, draws);
        let z: f64 = logits.iter().map(|&l| (f64::from(l / temp)).exp()).sum();
        let mut chi2 = 0.0;
        for (i, &l) in logits.iter().enumerate() {
            let p = f64::from(l / temp).exp() / z;
            // 5 standard deviations of a binomial frequency.
            let tol = 5.0 * (p * (1.0 - p) / draws as f64).sqrt() + 1e-4;
            assert!(
                (f[i] - p).abs() < tol,
                "temp {temp} token {i}: {} vs {p}",
                f[i]
            );
            chi2 += (f[i] - p).powi(2) / p * draws as f64;
        }
        // 4 degrees of freedom: P(chi2 > 18.5) ≈ 0.001.
        assert!(chi2 < 18.5, "temp {temp}: chi2 {chi2}");
    }
}

/// Straightforward top-p and min-p over a fully sorted list, to check the partial-sort path.
/// The softmax sum runs in vocabulary order, as llama.cpp's (it decides the boundary token).
fn reference_keep(logits: &[f32], top_p: f32, min_p: f32) -> Vec<u32> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l));
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let mut v: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, l))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let e: Vec<f32> = v.iter().map(|&(_, l)| (l - max).exp()).collect();
    let mut cum = 0.0f32;
    let mut keep = v.len();
    for (i, p) in e.iter().enumerate() {
        cum += p / sum;
        if cum >= top_p {
            keep = i + 1;
            break;
        }
    }
    v.truncate(keep);
    let min_logit = max + min_p.ln();
    v.retain(|&(_, l)| min_p <= 0.0 || l >= min_logit);
    let mut ids: Vec<u32> = v.iter().map(|&(i, _)| i).collect();
    ids.sort_unstable();
    ids
}

#[test]
fn top_p_over_a_large_vocabulary() {
    // More than 1024 candidates without top-k takes the partial-sort path; flat logits make the
    // mass spread past the first 256, a peaked one keeps it inside.
    for (seed, scale) in [(1u32, 0.2f32), (2, 1.0), (3, 8.0)] {
        let logits: Vec<f32> = random_logits(5000, seed)
            .iter()
            .map(|l| l * scale)
            .collect();
        for (top_p, min_p) in [(0.9f32, 0.0f32), (0.5, 0.0), (0.95, 0.05), (1.0, 0.3)] {
            let cfg = SamplerConfig {
                top_p,
                min_p,
                ..plain(1.0, 0)
            };
            let mut s = Sampler::new(cfg, logits.len());
            let got = kept_ids(&mut s, &logits, &[]);
            assert_eq!(
                got,
                reference_keep(&logits, top_p, min_p),
                "scale {scale} top_p {top_p}"
            );
            let p: f32 = s.candidates(&logits, &[]).iter().map(|c| c.p).sum();
            assert!((p - 1.0).abs() < 1e-4);
        }
    }
}

#[test]
fn nan_logits_are_never_drawn() {
    let logits = [f32::NAN, 1.0, f32::NAN, 1.0];
    let mut s = Sampler::new(plain(1.0, 9), 4);
    let f = frequencies(&mut s, &logits, 2000);
    assert_eq!(f[0] + f[2], 0.0);
    let mut s = Sampler::new(SamplerConfig::greedy(), 4);
    assert_eq!(s.sample(&logits, &[]), 1);
}

#[test]
fn vocabulary_size_mismatch_and_empty_logits() {
    let logits = random_logits(300, 4);
    let mut s = Sampler::new(
        SamplerConfig {
            repeat_penalty: 1.3,
            ..Default::default()
        },
        10,
    );
    let history: Vec<u32> = (0..100).collect();
    let t = s.sample(&logits, &history);
    assert!((t as usize) < logits.len());
    assert_eq!(s.sample(&[], &history), 0);
    assert!(s.candidates(&[], &history).is_empty());
}
