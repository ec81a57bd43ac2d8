//! Bad input gets a clear one-line error and a non-zero exit: never a panic, never output.

mod common;

use std::path::Path;

fn assert_one_line_error(args: &[&str]) -> String {
    let out = common::rustorch(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded: {stderr}");
    let code = out.status.code();
    assert!(
        matches!(code, Some(1) | Some(2)),
        "{args:?}: exit status {code:?} (a panic exits 101): {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{args:?} printed to stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one line on stderr, got: {stderr}"
    );
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_string()
}

fn truncated_copy(dir: &Path, len: u64) -> String {
    let src = std::fs::read(common::model(common::SMOLLM)).unwrap();
    let p = dir.join(format!("truncated-{len}.gguf"));
    std::fs::write(&p, &src[..len as usize]).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn truncated_model_is_an_error_for_every_command() {
    let dir = tempfile::tempdir().unwrap();
    // Inside the header, inside the metadata, inside the tensor infos, inside the data.
    for len in [3u64, 20, 5_000, 2_000_000, 60_000_000] {
        let p = truncated_copy(dir.path(), len);
        let e = assert_one_line_error(&["inspect", &p]);
        assert!(e.contains(&p), "the error names the file: {e}");
        assert_one_line_error(&["run", "-m", &p, "-p", "hi", "-n", "2"]);
        assert_one_line_error(&["tokenize", "-m", &p, "-p", "hi"]);
    }
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("text.gguf");
    std::fs::write(&p, b"this is not a model file at all, just text\n").unwrap();
    let e = assert_one_line_error(&["inspect", p.to_str().unwrap()]);
    assert!(e.to_lowercase().contains("magic"), "{e}");
    assert_one_line_error(&["inspect", dir.path().join("missing.gguf").to_str().unwrap()]);
}

#[test]
fn bad_flag_values() {
    let m = common::model(common::SMOLLM);
    let m = m.to_str().unwrap();
    assert_one_line_error(&["run", "-m", m, "-p", "hi", "--top-p", "1.5"]);
    assert_one_line_error(&["run", "-m", m, "-p", "hi", "--temp", "-1"]);
    assert_one_line_error(&["run", "-m", m, "-p", "hi", "-n", "-7"]);
    assert_one_line_error(&["run", "-m", m, "-p", "hi", "--backend", "cuda"]);
    assert_one_line_error(&["run", "-m", m, "-p", "hi", "--backend", "metal"]);
    assert_one_line_error(&["quantize", m, "/tmp/never-written.gguf", "Q7_X"]);
    // llama-quantize refuses Q2_K_S without an importance matrix; so do we.
    let e = assert_one_line_error(&[
        "quantize",
        "--allow-requantize",
        m,
        "/tmp/never-written.gguf",
        "Q2_K_S",
    ]);
    assert!(e.contains("importance matrix"), "{e}");
    assert!(!std::path::Path::new("/tmp/never-written.gguf").exists());
}

#[test]
fn prompt_longer_than_the_context() {
    let m = common::model(common::SMOLLM);
    let prompt = "word ".repeat(100);
    let e = assert_one_line_error(&[
        "run",
        "-m",
        m.to_str().unwrap(),
        "-p",
        &prompt,
        "-c",
        "16",
        "-n",
        "4",
    ]);
    assert!(e.contains("context"), "{e}");
}

#[test]
fn unknown_architecture() {
    // Rewrite the architecture string in place: "llama" -> "lxama" keeps every length intact.
    let mut bytes = std::fs::read(common::model(common::SMOLLM)).unwrap();
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap();
    // key, then u32 value type, u64 length, then the value.
    let value = at + key.len() + 4 + 8;
    assert_eq!(&bytes[value..value + 5], b"llama");
    bytes[value + 1] = b'x';
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("lxama.gguf");
    std::fs::write(&p, &bytes).unwrap();
    let e = assert_one_line_error(&["run", "-m", p.to_str().unwrap(), "-p", "hi", "-n", "2"]);
    assert!(
        e.contains("lxama") && e.contains("llama"),
        "names the architecture and the supported ones: {e}"
    );
}
