//! Cross-check with the reference Python implementation (gguf-py, `pip install gguf==0.19.0`):
//! gguf-py must read what we write exactly as we do, and we must read what gguf-py writes exactly as
//! it does. Both sides print the same line format (see `tests/py/gguf_dump.py`).
//!
//! Without the package the test passes with a message, unless `RUSTORCH_REQUIRE_PY_GGUF=1` (CI).

mod common;

use std::path::Path;
use std::process::Command;

use common::{all_values, fill, kv, specs};
use rustorch_gguf::{Array, GgufFile, GgufWriter, Value};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/gguf_dump.py");

/// Whether gguf-py is importable; if not, fails when CI requires it, else says why it is skipped.
fn have_gguf_py() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import gguf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let msg = "python3 cannot `import gguf` (install it with `pip install gguf==0.19.0`)";
        if std::env::var("RUSTORCH_REQUIRE_PY_GGUF").as_deref() == Ok("1") {
            panic!("{msg}; RUSTORCH_REQUIRE_PY_GGUF=1 requires the gguf-py cross-check");
        }
        eprintln!("SKIPPED gguf-py cross-check: {msg}");
    }
    ok
}

fn gguf_py_dump(path: &Path, write_first: bool) -> Vec<String> {
    let mut cmd = Command::new("python3");
    cmd.arg(SCRIPT).arg(path);
    if write_first {
        cmd.arg("--write");
    }
    let out = cmd.output().expect("running python3");
    assert!(
        out.status.success(),
        "gguf_dump.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn float(x: f64) -> String {
    format!("f{:016x}", x.to_bits())
}

/// gguf-py's type list: the value's type, then for arrays the types of the first element, down.
fn py_types(v: &Value, out: &mut Vec<&'static str>) {
    fn array(a: &Array, out: &mut Vec<&'static str>) {
        out.push("ARRAY");
        if a.is_empty() {
            return;
        }
        match a {
            Array::Array(v) => array(&v[0], out),
            a => out.push(py_name(
                &a.type_name()["array[".len()..a.type_name().len() - 1],
            )),
        }
    }
    match v {
        Value::Array(a) => array(a, out),
        v => out.push(py_name(v.type_name())),
    }
}

fn py_name(ours: &str) -> &'static str {
    match ours {
        "u8" => "UINT8",
        "i8" => "INT8",
        "u16" => "UINT16",
        "i16" => "INT16",
        "u32" => "UINT32",
        "i32" => "INT32",
        "f32" => "FLOAT32",
        "bool" => "BOOL",
        "string" => "STRING",
        "u64" => "UINT64",
        "i64" => "INT64",
        "f64" => "FLOAT64",
        t => panic!("no gguf-py name for {t}"),
    }
}

/// Flattened leaves, as gguf-py's `contents()` gives them.
fn leaves(v: &Value, out: &mut Vec<String>) {
    fn array(a: &Array, out: &mut Vec<String>) {
        match a {
            Array::U8(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::I8(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::U16(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::I16(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::U32(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::I32(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::F32(v) => out.extend(v.iter().map(|&x| float(x.into()))),
            Array::Bool(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::String(v) => out.extend(v.iter().map(|x| format!("s{}", hex(x.as_bytes())))),
            Array::Array(v) => v.iter().for_each(|a| array(a, out)),
            Array::U64(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::I64(v) => out.extend(v.iter().map(|x| x.to_string())),
            Array::F64(v) => out.extend(v.iter().map(|&x| float(x))),
        }
    }
    out.push(match v {
        Value::Array(a) => return array(a, out),
        Value::F32(x) => float((*x).into()),
        Value::F64(x) => float(*x),
        Value::String(s) => format!("s{}", hex(s.as_bytes())),
        v => v.to_string(),
    });
}

/// Our reading of `f` in the dump format.
fn our_dump(f: &GgufFile) -> Vec<String> {
    let mut lines = Vec::new();
    for (key, v) in f.metadata() {
        let (mut types, mut ls) = (Vec::new(), Vec::new());
        py_types(v, &mut types);
        leaves(v, &mut ls);
        lines.push(format!("kv\t{key}\t{}\t{}", types.join(","), ls.join(" ")));
    }
    for t in f.tensors() {
        let dims: Vec<String> = t.dims.iter().map(u64::to_string).collect();
        lines.push(format!(
            "tensor\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            t.name,
            t.ty.name().to_uppercase(),
            t.ty.id(),
            dims.join(","),
            t.n_bytes,
            f.data_offset() + t.offset,
            hex(f.tensor_data(t))
        ));
    }
    lines
}

fn assert_same(ours: &[String], theirs: &[String]) {
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a, b, "line {i} differs (ours, then gguf-py)");
    }
    assert_eq!(
        ours.len(),
        theirs.len(),
        "ours:\n{ours:#?}\ngguf-py:\n{theirs:#?}"
    );
}

#[test]
fn gguf_py_reads_what_we_write() {
    if !have_gguf_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.gguf");
    let mut metadata = all_values();
    // gguf-py reports the types of a nested array's first element only, and flattens it.
    metadata.retain(|(k, _)| k != "a.nested");
    metadata.push(kv(
        "a.nested",
        Value::Array(Array::Array(vec![
            Array::I32(vec![1, 2]),
            Array::I32(vec![3]),
        ])),
    ));
    metadata.push(kv("general.alignment", Value::U32(64)));
    let specs = specs();
    let mut w = GgufWriter::create(&path, &metadata, &specs).unwrap();
    for (i, t) in specs.iter().enumerate() {
        w.write_tensor_data(&fill(i, t.n_bytes().unwrap())).unwrap();
    }
    w.commit().unwrap();

    let f = GgufFile::open(&path).unwrap();
    assert_same(&our_dump(&f), &gguf_py_dump(&path, false));
}

#[test]
fn we_read_what_gguf_py_writes() {
    if !have_gguf_py() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("theirs.gguf");
    let theirs = gguf_py_dump(&path, true);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment(), 64);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(
        f.get("a.nested3").unwrap().type_name(),
        "array[array]",
        "nested arrays keep their structure"
    );
    assert_same(&our_dump(&f), &theirs);
}
