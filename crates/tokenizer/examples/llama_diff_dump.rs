//! Prints what the tokenizer does on a set of texts, in the format of the llama.cpp harness in
//! `tools/llama-diff/`, so the two outputs can be compared with `diff`:
//! `cargo run --release -p rustorch-tokenizer --example llama_diff_dump -- MODEL.gguf TEXTS.bin`
//! TEXTS.bin: each text as a little-endian u32 byte length, then its UTF-8 bytes.
use std::io::Write;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let f = rustorch_gguf::GgufFile::open(&args[0]).expect("open model");
    let tok = rustorch_tokenizer::Tokenizer::from_gguf(&f).expect("tokenizer");
    let out = std::io::stdout();
    let mut o = std::io::BufWriter::new(out.lock());
    let id = |x: Option<u32>| x.map_or(-1, |v| v as i64);
    writeln!(
        o,
        "bos {} eos {} eot {} eom {} unk {} pad {} add_bos {} add_eos {}",
        id(tok.bos()),
        id(tok.eos()),
        id(tok.eot()),
        id(tok.eom()),
        id(tok.unk()),
        id(tok.pad()),
        u8::from(tok.add_bos()),
        u8::from(tok.add_eos())
    )
    .unwrap();
    let eog: Vec<String> = tok.eog_ids().map(|i| i.to_string()).collect();
    writeln!(o, "eog {}", eog.join(" ")).unwrap();
    for sp in [false, true] {
        for i in 0..tok.n_vocab() as u32 {
            writeln!(
                o,
                "P{} {i} {}",
                u8::from(sp),
                hex(&tok.token_to_piece(i, sp))
            )
            .unwrap();
            if tok.is_control(i) {
                writeln!(o, "C {i}").unwrap();
            }
        }
    }
    let data = std::fs::read(&args[1]).expect("read texts");
    let mut pos = 0;
    let mut ti = 0;
    while pos + 4 <= data.len() {
        let n = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        let text = std::str::from_utf8(&data[pos + 4..pos + 4 + n]).expect("utf-8 text");
        pos += 4 + n;
        for (add, parse) in [(true, true), (true, false), (false, false)] {
            let ids = tok.encode(text, add, parse);
            let list: String = ids.iter().map(|i| format!(" {i}")).collect();
            writeln!(o, "T{ti} {}{}{list}", u8::from(add), u8::from(parse)).unwrap();
            if parse {
                for sp in [false, true] {
                    writeln!(
                        o,
                        "D{ti} {} {}",
                        u8::from(sp),
                        hex(tok.decode(&ids, sp).as_bytes())
                    )
                    .unwrap();
                }
            }
        }
        ti += 1;
    }
}
