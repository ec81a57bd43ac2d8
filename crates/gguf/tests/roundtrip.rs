//! The writer: what it writes reads back identically, byte-for-byte matches an independent
//! encoder, and everything the reader would reject is refused before anything is written.

mod common;

use common::{all_values, fill, kv, specs, write, Crafted};
use rustorch_gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, TensorSpec, Value};

fn check_roundtrip(metadata: &[(String, Value)], f: &GgufFile, alignment: u64) {
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), alignment);
    assert_eq!(f.data_offset() % alignment, 0);
    assert_eq!(f.metadata(), metadata);
    let specs = specs();
    assert_eq!(f.tensors().len(), specs.len());
    let mut expected_offset = 0;
    for (i, (t, s)) in f.tensors().iter().zip(&specs).enumerate() {
        assert_eq!((&t.name, &t.dims, t.ty), (&s.name, &s.dims, s.ty));
        assert_eq!(t.n_bytes, s.n_bytes().unwrap());
        assert_eq!(t.n_elements, s.dims.iter().product::<u64>());
        assert_eq!(t.offset % alignment, 0, "{}", t.name);
        assert_eq!(
            t.offset, expected_offset,
            "tensors are packed in spec order"
        );
        expected_offset += t.n_bytes.div_ceil(alignment) * alignment;
        assert_eq!(f.tensor_data(t), fill(i, t.n_bytes), "{}", t.name);
        assert_eq!(f.tensor(&t.name), Some(t));
    }
    assert_eq!(f.file_size(), f.data_offset() + expected_offset);
}

#[test]
fn roundtrip_every_value_type() {
    let metadata = all_values();
    let bytes = write(&metadata, &specs());
    let f = GgufFile::from_bytes(bytes).unwrap();
    check_roundtrip(&metadata, &f, 32);
    assert_eq!(f.get_str("t.string").unwrap(), "héllo ✓ \u{0} \n");
    assert_eq!(f.get("a.nested").unwrap().type_name(), "array[array]");
}

#[test]
fn roundtrip_custom_alignment_through_a_file() {
    for alignment in [1u32, 8, 64, 8192] {
        let mut metadata = all_values();
        metadata.insert(3, kv("general.alignment", Value::U32(alignment)));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.gguf");
        let specs = specs();
        let mut w = GgufWriter::create(&path, &metadata, &specs).unwrap();
        for (i, t) in specs.iter().enumerate() {
            w.write_tensor_data(&fill(i, t.n_bytes().unwrap())).unwrap();
        }
        w.commit().unwrap();
        let f = GgufFile::open(&path).unwrap();
        check_roundtrip(&metadata, &f, alignment.into());
    }
}

#[test]
fn no_tensors() {
    let metadata = vec![kv("general.architecture", Value::String("x".into()))];
    let bytes = write(&metadata, &[]);
    let f = GgufFile::from_bytes(bytes).unwrap();
    assert_eq!(f.metadata(), metadata);
    assert!(f.tensors().is_empty());
    let bytes = write(&[], &[]);
    assert_eq!(bytes.len(), 32); // 24-byte header, padded
    assert!(GgufFile::from_bytes(bytes).unwrap().metadata().is_empty());
}

/// The writer's output equals the independent hand-built encoding of the same file.
#[test]
fn matches_the_hand_built_encoding() {
    let mut c = Crafted::valid();
    // The writer pads with zeros: after b.weight (32..104) and c.bias (128..134).
    c.data[104..128].fill(0);
    c.data[134..].fill(0);
    let metadata = vec![
        kv("general.architecture", Value::String("llama".into())),
        kv("llama.block_count", Value::U32(2)),
        kv(
            "tokenizer.ggml.tokens",
            Value::Array(Array::String(vec!["<s>".into(), "a".into(), "bc".into()])),
        ),
        kv(
            "tokenizer.ggml.scores",
            Value::Array(Array::F32(vec![0.0, -1.0, -2.5])),
        ),
    ];
    let specs = [
        TensorSpec::new("a.weight", &[4, 2], GgmlType::F32),
        TensorSpec::new("b.weight", &[64, 2], GgmlType::Q4_0),
        TensorSpec::new("c.bias", &[3], GgmlType::F16),
    ];
    let mut w = GgufWriter::new(Vec::new(), &metadata, &specs).unwrap();
    w.write_tensor_data(&c.data[0..32]).unwrap();
    w.write_tensor_data(&c.data[32..104]).unwrap();
    w.write_tensor_data(&c.data[128..134]).unwrap();
    assert_eq!(w.finish().unwrap(), c.bytes());
}

// ---------------------------------------------------------------- writer errors

fn new_err(metadata: &[(String, Value)], tensors: &[TensorSpec]) -> GgufError {
    match GgufWriter::new(Vec::new(), metadata, tensors) {
        Ok(_) => panic!("writer accepted invalid input"),
        Err(e) => e,
    }
}

#[test]
fn writer_rejects_bad_metadata() {
    let dup = [
        kv("a", Value::U8(1)),
        kv("b", Value::U8(1)),
        kv("a", Value::I8(1)),
    ];
    assert!(matches!(new_err(&dup, &[]), GgufError::DuplicateKey { key } if key == "a"));
    let empty = [kv("", Value::U8(1))];
    assert!(matches!(
        new_err(&empty, &[]),
        GgufError::EmptyKey { index: 0, .. }
    ));
    for a in [0, 3, 96] {
        let bad = [kv("general.alignment", Value::U32(a))];
        assert!(
            matches!(new_err(&bad, &[]), GgufError::BadAlignment { .. }),
            "{a}"
        );
    }
    let wrong = [kv("general.alignment", Value::U64(32))];
    assert!(matches!(
        new_err(&wrong, &[]),
        GgufError::WrongType {
            expected: "u32",
            found: "u64",
            ..
        }
    ));
    let mut deep = Array::U8(vec![1]);
    for _ in 0..rustorch_gguf::MAX_ARRAY_DEPTH {
        deep = Array::Array(vec![deep]);
    }
    let deep = [kv("deep", Value::Array(deep))];
    assert!(matches!(
        new_err(&deep, &[]),
        GgufError::ArrayTooDeep { .. }
    ));
}

#[test]
fn writer_rejects_bad_tensors() {
    let t = |name: &str, dims: &[u64], ty| TensorSpec::new(name, dims, ty);
    type Case = (Vec<TensorSpec>, fn(&GgufError) -> bool);
    let cases: Vec<Case> = vec![
        (
            vec![t("x", &[32], GgmlType::F32), t("x", &[32], GgmlType::F16)],
            |e| matches!(e, GgufError::DuplicateTensor { name } if name == "x"),
        ),
        (vec![t("x", &[], GgmlType::F32)], |e| {
            matches!(e, GgufError::BadDimCount { n_dims: 0, .. })
        }),
        (vec![t("x", &[1, 1, 1, 1, 1], GgmlType::F32)], |e| {
            matches!(e, GgufError::BadDimCount { n_dims: 5, .. })
        }),
        (vec![t("x", &[33], GgmlType::Q8_0)], |e| {
            matches!(e, GgufError::RowNotBlockMultiple { row: 33, .. })
        }),
        (vec![t("x", &[1 << 32, 1 << 32], GgmlType::F32)], |e| {
            matches!(e, GgufError::ShapeOverflow { .. })
        }),
        (vec![t("x", &[u64::MAX], GgmlType::F32)], |e| {
            matches!(e, GgufError::BadDim { .. })
        }),
        (vec![t(&"n".repeat(64), &[1], GgmlType::F32)], |e| {
            matches!(e, GgufError::TensorNameTooLong { len: 64, .. })
        }),
        // Each fits, but their offsets do not.
        (
            vec![
                t("x", &[1 << 62], GgmlType::F16),
                t("y", &[1 << 62], GgmlType::F16),
                t("z", &[1], GgmlType::F16),
            ],
            |e| matches!(e, GgufError::ByteSizeOverflow { tensor, .. } if tensor == "y"),
        ),
    ];
    for (specs, ok) in cases {
        let e = new_err(&[], &specs);
        assert!(ok(&e), "{specs:?}: {e:?}");
    }
}

#[test]
fn writer_checks_tensor_data() {
    let specs = [
        TensorSpec::new("a", &[4], GgmlType::F32),
        TensorSpec::new("b", &[32], GgmlType::Q8_0),
    ];
    let mut w = GgufWriter::new(Vec::new(), &[], &specs).unwrap();
    let e = w.write_tensor_data(&[0; 15]).unwrap_err();
    assert!(
        matches!(e, GgufError::TensorSizeMismatch { ref tensor, expected: 16, actual: 15 } if tensor == "a")
    );
    w.write_tensor_data(&[0; 16]).unwrap();
    assert_eq!(w.tensors_written(), 1);
    let e = w.finish().unwrap_err();
    assert!(
        matches!(e, GgufError::MissingTensorData { ref next, written: 1, declared: 2 } if next == "b"),
        "{e}"
    );

    let mut w = GgufWriter::new(Vec::new(), &[], &specs).unwrap();
    w.write_tensor_data(&[0; 16]).unwrap();
    w.write_tensor_data(&[0; 34]).unwrap();
    let e = w.write_tensor_data(&[0; 1]).unwrap_err();
    assert!(matches!(e, GgufError::TooManyTensorData { declared: 2 }));
    let bytes = w.finish().unwrap();
    assert_eq!(GgufFile::from_bytes(bytes).unwrap().tensors().len(), 2);
}

#[test]
fn create_does_not_touch_the_file_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.gguf");
    let dup = [kv("a", Value::U8(1)), kv("a", Value::U8(1))];
    assert!(GgufWriter::create(&path, &dup, &[]).is_err());
    assert!(!path.exists());
    let e = GgufWriter::create(dir.path().join("no/such/dir/x.gguf"), &[], &[])
        .err()
        .unwrap();
    assert!(matches!(e, GgufError::Output(_)), "{e}");
}

#[test]
fn getters() {
    let metadata = all_values();
    let f = GgufFile::from_bytes(write(&metadata, &[])).unwrap();
    assert_eq!(f.get_u32("t.u8").unwrap(), 200);
    assert_eq!(f.get_u32("t.u16").unwrap(), 60000);
    assert_eq!(f.get_u64("t.u64").unwrap(), u64::MAX);
    assert_eq!(f.get_i64("t.i8").unwrap(), -100);
    assert_eq!(f.get_i64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_f32("t.f32").unwrap(), -0.15625);
    assert_eq!(f.get_f32("t.f64").unwrap(), f32::INFINITY); // 1e300 rounds to inf
    assert!(f.get_bool("t.bool_t").unwrap());
    assert_eq!(f.get_str_array("a.string").unwrap(), ["a", "", "ü"]);
    assert_eq!(f.get_f32_array("a.f32").unwrap(), [0.5, -2.0, 1e-30]);
    assert_eq!(f.get_i32_array("a.i32").unwrap(), [-1, 0, 1]);
    assert_eq!(f.opt_u32("missing").unwrap(), None);
    assert_eq!(f.opt_str("general.architecture").unwrap(), Some("llama"));
    assert_eq!(f.opt_bool("t.bool_f").unwrap(), Some(false));
    assert_eq!(f.opt_f32_array("missing").unwrap(), None);
    assert_eq!(f.opt_u64("t.u32").unwrap(), Some(4_000_000_000));

    let e = f.get_u32("missing").unwrap_err();
    assert!(matches!(e, GgufError::MissingKey { ref key } if key == "missing"));
    assert_eq!(e.to_string(), "metadata key 'missing' not found");
    let e = f.get_u32("t.string").unwrap_err();
    assert!(matches!(
        e,
        GgufError::WrongType {
            expected: "u32",
            found: "string",
            ..
        }
    ));
    assert_eq!(
        e.to_string(),
        "metadata key 't.string' has type string, expected u32"
    );
    let e = f.opt_str_array("a.f32").unwrap_err();
    assert!(matches!(
        e,
        GgufError::WrongType {
            expected: "array[string]",
            found: "array[f32]",
            ..
        }
    ));
    for key in ["t.i8", "t.i32", "t.i64", "t.u64"] {
        let e = f.get_u32(key).unwrap_err();
        assert!(
            matches!(
                e,
                GgufError::OutOfRange {
                    expected: "u32",
                    ..
                }
            ),
            "{key}: {e}"
        );
    }
    assert!(matches!(
        f.get_i64("t.u64").unwrap_err(),
        GgufError::OutOfRange { .. }
    ));
    assert!(matches!(
        f.get_f32("t.u32").unwrap_err(),
        GgufError::WrongType { .. }
    ));
    assert!(matches!(
        f.get_bool("t.u8").unwrap_err(),
        GgufError::WrongType { .. }
    ));
    assert!(matches!(
        f.opt_i32_array("a.u32").unwrap_err(),
        GgufError::WrongType { .. }
    ));
}
