//! Times `encode` on a text file for each model given:
//! `cargo run --release -p rustorch-tokenizer --example bench_encode -- TEXT MODEL.gguf...`
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (text, models) = args
        .split_first()
        .expect("usage: bench_encode TEXT MODEL.gguf...");
    let text = std::fs::read_to_string(text).expect("read text");
    for m in models {
        let t0 = Instant::now();
        let f = rustorch_gguf::GgufFile::open(m).expect("open");
        let tok = rustorch_tokenizer::Tokenizer::from_gguf(&f).expect("tokenizer");
        let load = t0.elapsed();
        for parse_special in [false, true] {
            let t1 = Instant::now();
            let ids = tok.encode(&text, true, parse_special);
            let enc = t1.elapsed();
            let t2 = Instant::now();
            let back = tok.decode(&ids, false);
            println!(
                "{m}: load {load:.2?}, encode {} bytes -> {} ids in {enc:.2?} (parse_special={parse_special}), decode {:.2?}, round trip {}",
                text.len(),
                ids.len(),
                t2.elapsed(),
                back == text
            );
        }
    }
}
