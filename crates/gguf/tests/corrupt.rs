//! A generator of corrupted files: each corruption of a valid hand-built file must be rejected with
//! its own error variant (not merely "an error"), by both `from_bytes` and `open`, without panicking.

mod common;

use std::io::Write;

use common::*;
use rustorch_gguf::{GgmlType, GgufError, GgufFile};

#[test]
fn the_base_file_is_valid() {
    let c = Crafted::valid();
    let (bytes, layout) = c.bytes_and_layout();
    let f = parse_ok(bytes);
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.data_offset() as usize, layout.data_offset);
    assert_eq!(f.data_offset() % 32, 0);
    assert_eq!(f.metadata().len(), 4);
    assert_eq!(f.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(
        f.get_str_array("tokenizer.ggml.tokens").unwrap(),
        ["<s>", "a", "bc"]
    );
    let names: Vec<_> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a.weight", "b.weight", "c.bias"]);
    let b = f.tensor("b.weight").unwrap();
    assert_eq!((b.ty, b.n_elements, b.n_bytes), (GgmlType::Q4_0, 128, 72));
    assert_eq!(f.tensor_data(b), &c.data[32..104]);
    assert_eq!(
        f.tensor_data(f.tensor("c.bias").unwrap()),
        &c.data[128..134]
    );
}

// ---------------------------------------------------------------- header

#[test]
fn bad_magic() {
    let mut c = Crafted::valid();
    c.magic = *b"GGML";
    assert_parse_err!(c.bytes(), GgufError::BadMagic { found } if &found == b"GGML");
    assert_parse_err!(
        Vec::new(),
        GgufError::Truncated {
            offset: 0,
            needed: 4,
            ..
        }
    );
}

#[test]
fn bad_versions() {
    for version in [0, 1, 4, 0xFFFF, u32::MAX] {
        let mut c = Crafted::valid();
        c.version = version;
        assert_parse_err!(c.bytes(), GgufError::UnsupportedVersion { version: v } if v == version);
    }
    // Version 3 written big-endian.
    let mut c = Crafted::valid();
    c.version = 0x0300_0000;
    assert_parse_err!(
        c.bytes(),
        GgufError::WrongEndianness {
            version: 0x0300_0000
        }
    );
    // Version 2 has the same layout.
    let mut c = Crafted::valid();
    c.version = 2;
    assert_eq!(parse_ok(c.bytes()).version(), 2);
}

#[test]
fn counts_larger_than_the_file() {
    for n in [1000, 1 << 40, 1 << 62, u64::MAX] {
        let mut c = Crafted::valid();
        c.n_tensors = Some(n);
        let e = assert_parse_err!(c.bytes(), GgufError::CountTooLarge { count, offset: 8, .. } if count == n);
        assert!(e.to_string().contains("tensor count"), "{e}");

        let mut c = Crafted::valid();
        c.n_kv = Some(n);
        let e = assert_parse_err!(c.bytes(), GgufError::CountTooLarge { count, offset: 16, .. } if count == n);
        assert!(e.to_string().contains("kv count"), "{e}");
    }
    let mut c = Crafted::valid();
    c.n_kv = Some(u64::MAX);
    assert_parse_err!(
        c.bytes(),
        GgufError::CountTooLarge {
            offset: 16,
            count: u64::MAX,
            ..
        }
    );
}

// ---------------------------------------------------------------- kv pairs

#[test]
fn key_length_absurd() {
    for len in [1u64 << 63, u64::MAX, 1 << 32] {
        let c = Crafted::valid();
        let (mut bytes, layout) = c.bytes_and_layout();
        bytes[layout.kv_start..layout.kv_start + 8].copy_from_slice(&len.to_le_bytes());
        let e = assert_parse_err!(bytes, GgufError::Truncated { needed, .. } if needed == len);
        assert!(e.to_string().contains("key of kv pair #0"), "{e}");
    }
}

#[test]
fn string_value_length_2_pow_63() {
    let mut c = Crafted::valid();
    let mut payload = u64le(1 << 63);
    payload.extend(b"llama");
    c.kvs[0].payload = payload;
    let e = assert_parse_err!(
        c.bytes(),
        GgufError::Truncated {
            needed: 0x8000_0000_0000_0000,
            ..
        }
    );
    assert!(e.to_string().contains("general.architecture"), "{e}");
}

#[test]
fn empty_key() {
    let mut c = Crafted::valid();
    c.kvs[1].key.clear();
    assert_parse_err!(c.bytes(), GgufError::EmptyKey { index: 1, .. });
}

#[test]
fn invalid_utf8() {
    // In a key.
    let mut c = Crafted::valid();
    c.kvs[1].key = b"llama.\xff".to_vec();
    let e = assert_parse_err!(c.bytes(), GgufError::InvalidUtf8 { .. });
    assert!(e.to_string().contains("key of kv pair #1"), "{e}");
    // In a string value: the error names the key.
    let mut c = Crafted::valid();
    c.kvs[0].payload = gstr(b"lla\xc3ma");
    let e = assert_parse_err!(c.bytes(), GgufError::InvalidUtf8 { .. });
    assert!(e.to_string().contains("'general.architecture'"), "{e}");
    // In an element of a string array.
    let mut c = Crafted::valid();
    let mut p = u32le(T_STRING);
    p.extend(u64le(2));
    p.extend(gstr(b"ok"));
    p.extend(gstr(b"\xed\xa0\x80")); // a UTF-16 surrogate
    c.kvs[2].payload = p;
    let e = assert_parse_err!(c.bytes(), GgufError::InvalidUtf8 { .. });
    assert!(
        e.to_string()
            .contains("element 1 of array of key 'tokenizer.ggml.tokens'"),
        "{e}"
    );
    // In a tensor name.
    let mut c = Crafted::valid();
    c.tis[2].name = b"c.\x80".to_vec();
    let e = assert_parse_err!(c.bytes(), GgufError::InvalidUtf8 { .. });
    assert!(e.to_string().contains("name of tensor #2"), "{e}");
}

#[test]
fn unknown_value_types() {
    for ty in [13, 14, 255, u32::MAX] {
        let mut c = Crafted::valid();
        c.kvs[1].ty = ty;
        assert_parse_err!(
            c.bytes(),
            GgufError::UnknownValueType { ref key, type_id, .. } if key == "llama.block_count" && type_id == ty
        );
        // As an array element type.
        let mut c = Crafted::valid();
        c.kvs[3].payload[..4].copy_from_slice(&ty.to_le_bytes());
        assert_parse_err!(
            c.bytes(),
            GgufError::UnknownValueType { ref key, type_id, .. } if key == "tokenizer.ggml.scores" && type_id == ty
        );
    }
}

#[test]
fn array_counts_larger_than_the_file() {
    for (elem, count) in [
        (T_U8, 1u64 << 40),
        (T_F32, u64::MAX / 2),
        (T_F64, u64::MAX),
        (T_STRING, 1 << 61),
        (T_ARRAY, 1 << 60),
        (T_BOOL, 10_000), // a little more than the file
    ] {
        let mut c = Crafted::valid();
        let mut p = u32le(elem);
        p.extend(u64le(count));
        c.kvs[3].payload = p;
        assert_parse_err!(
            c.bytes(),
            GgufError::CountTooLarge { count: n, .. } if n == count
        );
    }
}

/// `depth` nested arrays around an array of one u8.
fn nested(depth: usize) -> Vec<u8> {
    // Each outer level is "element type ARRAY, count 1", followed by its single element.
    let mut p = Vec::new();
    for _ in 1..depth {
        p.extend(u32le(T_ARRAY));
        p.extend(u64le(1));
    }
    p.extend(u32le(T_U8));
    p.extend(u64le(1));
    p.push(7);
    p
}

#[test]
fn nested_arrays_are_bounded() {
    let max = rustorch_gguf::MAX_ARRAY_DEPTH;
    let mut c = Crafted::valid();
    c.kvs.push(Kv::raw("nested", T_ARRAY, nested(max)));
    let f = parse_ok(c.bytes());
    assert_eq!(f.get_array("nested").unwrap().depth(), max);

    let mut c = Crafted::valid();
    c.kvs.push(Kv::raw("nested", T_ARRAY, nested(max + 1)));
    assert_parse_err!(c.bytes(), GgufError::ArrayTooDeep { ref key, depth, .. } if key == "nested" && depth == max + 1);

    // Deep enough to overflow the stack without the bound.
    let mut c = Crafted::valid();
    c.kvs.push(Kv::raw("nested", T_ARRAY, nested(100_000)));
    assert_parse_err!(c.bytes(), GgufError::ArrayTooDeep { .. });
}

#[test]
fn duplicate_key() {
    let mut c = Crafted::valid();
    c.kvs.push(Kv::u32("llama.block_count", 3));
    assert_parse_err!(c.bytes(), GgufError::DuplicateKey { ref key } if key == "llama.block_count");
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48, 0x8000_0001] {
        let mut c = Crafted::valid();
        c.kvs.push(Kv::u32("general.alignment", a));
        assert_parse_err!(c.bytes(), GgufError::BadAlignment { alignment } if alignment == a.into());
    }
    for kv in [
        Kv::raw("general.alignment", T_U64, u64le(32)),
        Kv::raw("general.alignment", T_I32, u32le(32)),
        Kv::string("general.alignment", "32"),
    ] {
        let mut c = Crafted::valid();
        c.kvs.push(kv);
        assert_parse_err!(
            c.bytes(),
            GgufError::WrongType { ref key, expected: "u32", .. } if key == "general.alignment"
        );
    }
}

#[test]
fn custom_alignment() {
    // Alignment 64: data section and offsets must be multiples of 64.
    let mut c = Crafted::valid();
    c.kvs.push(Kv::u32("general.alignment", 64));
    c.alignment = 64;
    c.tis[1].offset = 64;
    c.tis[2].offset = 192;
    c.data.resize(256, 0);
    let f = parse_ok(c.bytes());
    assert_eq!((f.alignment(), f.data_offset() % 64), (64, 0));

    // Offset 32 is aligned for the default but not for 64.
    let mut c = Crafted::valid();
    c.kvs.push(Kv::u32("general.alignment", 64));
    c.alignment = 64;
    c.data.resize(256, 0);
    assert_parse_err!(
        c.bytes(),
        GgufError::MisalignedTensor { ref tensor, offset: 32, alignment: 64 } if tensor == "b.weight"
    );

    // Alignment 1: no padding at all.
    let mut c = Crafted::valid();
    c.kvs.push(Kv::u32("general.alignment", 1));
    c.alignment = 1;
    c.tis[1].offset = 32 + 1; // any offset is aligned
    let f = parse_ok(c.bytes());
    assert_eq!(f.tensor("b.weight").unwrap().offset, 33);
}

// ---------------------------------------------------------------- tensor infos

#[test]
fn tensor_name_length() {
    let c = Crafted::valid();
    let (mut bytes, layout) = c.bytes_and_layout();
    bytes[layout.infos_start..layout.infos_start + 8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    let e = assert_parse_err!(
        bytes,
        GgufError::Truncated {
            needed: 0x8000_0000_0000_0000,
            ..
        }
    );
    assert!(e.to_string().contains("name of tensor #0"), "{e}");

    let mut c = Crafted::valid();
    c.tis[0].name = vec![b'x'; 63];
    parse_ok(c.bytes());
    c.tis[0].name = vec![b'x'; 64];
    assert_parse_err!(
        c.bytes(),
        GgufError::TensorNameTooLong {
            len: 64,
            max: 63,
            ..
        }
    );
}

#[test]
fn bad_dim_counts() {
    for n in [0u32, 5, 255, u32::MAX] {
        let mut c = Crafted::valid();
        c.tis[1].n_dims = Some(n);
        assert_parse_err!(
            c.bytes(),
            GgufError::BadDimCount { ref tensor, n_dims } if tensor == "b.weight" && n_dims == n.into()
        );
    }
    // 4 dims is fine.
    let mut c = Crafted::valid();
    c.tis[0].dims = vec![2, 2, 1, 2];
    parse_ok(c.bytes());
}

#[test]
fn zero_dimensions_are_allowed_like_ggml() {
    let mut c = Crafted::valid();
    c.tis.push(Ti::new("empty", &[0, 5], 12, 160));
    c.tis.push(Ti::new("empty2", &[256, 0, 3], 12, 0));
    let f = parse_ok(c.bytes());
    for name in ["empty", "empty2"] {
        let t = f.tensor(name).unwrap();
        assert_eq!((t.n_elements, t.n_bytes), (0, 0));
        assert!(f.tensor_data(t).is_empty());
    }
}

#[test]
fn bad_dims() {
    let mut c = Crafted::valid();
    c.tis[0].dims = vec![4, 1 << 63];
    assert_parse_err!(
        c.bytes(),
        GgufError::BadDim {
            index: 1,
            value: 0x8000_0000_0000_0000,
            ..
        }
    );

    let mut c = Crafted::valid();
    c.tis[0].dims = vec![u64::MAX];
    assert_parse_err!(c.bytes(), GgufError::BadDim { index: 0, .. });

    // Each dimension fits i64 but the product does not.
    for dims in [
        vec![1 << 32, 1 << 31],
        vec![1 << 21, 1 << 21, 1 << 21],
        vec![3, i64::MAX as u64],
    ] {
        let mut c = Crafted::valid();
        c.tis[0].dims = dims.clone();
        assert_parse_err!(c.bytes(), GgufError::ShapeOverflow { dims: ref d, .. } if *d == dims);
    }
    // The element count fits i64 but the byte size does not fit u64.
    let mut c = Crafted::valid();
    c.tis[0].dims = vec![1 << 62];
    c.tis[0].ty = 28; // f64
    assert_parse_err!(
        c.bytes(),
        GgufError::ByteSizeOverflow {
            ty: GgmlType::F64,
            ..
        }
    );
    // Fits in u64 but not in the file.
    let mut c = Crafted::valid();
    c.tis[0].dims = vec![1 << 40, 1 << 20];
    assert_parse_err!(c.bytes(), GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "a.weight");
}

#[test]
fn unknown_ggml_types() {
    // Never defined, removed (Q4_2, Q4_3, Q4_0_4_4 ... IQ4_NL_8_8), or past the end.
    for ty in [4, 5, 31, 32, 33, 36, 37, 38, 43, 1000, u32::MAX] {
        let mut c = Crafted::valid();
        c.tis[2].ty = ty;
        assert_parse_err!(
            c.bytes(),
            GgufError::UnknownGgmlType { ref tensor, type_id } if tensor == "c.bias" && type_id == ty
        );
    }
}

#[test]
fn row_not_a_multiple_of_the_block() {
    let mut c = Crafted::valid();
    c.tis[1].dims = vec![48, 2]; // q4_0 blocks hold 32
    assert_parse_err!(
        c.bytes(),
        GgufError::RowNotBlockMultiple {
            row: 48,
            block_size: 32,
            ty: GgmlType::Q4_0,
            ..
        }
    );
    let mut c = Crafted::valid();
    c.tis[1].dims = vec![128, 1];
    c.tis[1].ty = 12; // q4_K blocks hold 256
    assert_parse_err!(
        c.bytes(),
        GgufError::RowNotBlockMultiple {
            row: 128,
            block_size: 256,
            ..
        }
    );
}

#[test]
fn misaligned_offset() {
    let mut c = Crafted::valid();
    c.tis[2].offset = 130;
    assert_parse_err!(
        c.bytes(),
        GgufError::MisalignedTensor { ref tensor, offset: 130, alignment: 32 } if tensor == "c.bias"
    );
}

#[test]
fn data_past_the_end() {
    for offset in [160, 1 << 20, u64::MAX - 31] {
        let mut c = Crafted::valid();
        c.tis[2].offset = offset;
        assert_parse_err!(
            c.bytes(),
            GgufError::TensorOutOfBounds { ref tensor, offset: o, n_bytes: 6, .. } if tensor == "c.bias" && o == offset
        );
    }
    // The data section itself is cut short.
    let mut c = Crafted::valid();
    c.data.truncate(100);
    assert_parse_err!(c.bytes(), GgufError::TensorOutOfBounds { ref tensor, .. } if tensor == "b.weight");
}

#[test]
fn overlapping_data() {
    let mut c = Crafted::valid();
    c.tis[2].offset = 96; // inside b.weight (32..104)
    assert_parse_err!(
        c.bytes(),
        GgufError::TensorOverlap { ref tensor, ref other, start: 96, end: 102, other_start: 32, other_end: 104 }
            if tensor == "c.bias" && other == "b.weight"
    );
    // Same start, reported against the tensor that comes later in the file.
    let mut c = Crafted::valid();
    c.tis[0].offset = 128;
    assert_parse_err!(
        c.bytes(),
        GgufError::TensorOverlap { ref tensor, ref other, .. } if tensor == "c.bias" && other == "a.weight"
    );
    // Gaps and out-of-order offsets are fine.
    let mut c = Crafted::valid();
    c.tis[0].offset = 128;
    c.tis[2].offset = 0;
    parse_ok(c.bytes());
}

#[test]
fn duplicate_tensor_name() {
    let mut c = Crafted::valid();
    c.tis[2].name = b"a.weight".to_vec();
    assert_parse_err!(c.bytes(), GgufError::DuplicateTensor { ref name } if name == "a.weight");
}

// ---------------------------------------------------------------- truncation

/// Cutting the file at every byte is a truncation error naming the section, from both readers;
/// cutting the data section is an out-of-bounds tensor, unless only trailing padding is lost.
#[test]
fn truncation_at_every_byte() {
    let mut c = Crafted::valid();
    // Exercise nested arrays and every scalar type in the kv section as well.
    c.kvs.push(Kv::raw("nested", T_ARRAY, nested(3)));
    c.kvs.push(Kv::raw("flag", T_BOOL, vec![1]));
    c.kvs
        .push(Kv::raw("big", T_F64, 1.5f64.to_le_bytes().to_vec()));
    let (bytes, layout) = c.bytes_and_layout();
    let data_end = layout.data_offset + 134; // c.bias ends at 128 + 6
    parse_ok(bytes.clone());

    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.write_all(&bytes).unwrap();
    tmp.flush().unwrap();
    for cut in (0..bytes.len()).rev() {
        let from_bytes = GgufFile::from_bytes(bytes[..cut].to_vec());
        tmp.as_file().set_len(cut as u64).unwrap();
        let opened = GgufFile::open(tmp.path());
        if cut >= data_end {
            assert!(from_bytes.is_ok() && opened.is_ok(), "cut at {cut}");
            continue;
        }
        let e = from_bytes.expect_err("truncated file accepted");
        let o = opened.expect_err("truncated file accepted");
        assert_eq!(format!("{:?}", o.root()), format!("{e:?}"), "cut at {cut}");
        if cut >= layout.data_offset {
            assert!(
                matches!(e, GgufError::TensorOutOfBounds { .. }),
                "cut at {cut}: {e:?}"
            );
        } else if cut >= layout.infos_end {
            assert!(
                matches!(e, GgufError::Truncated { ref what, .. } if what.contains("padding")),
                "cut at {cut}: {e:?}"
            );
        } else {
            assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. } | GgufError::CountTooLarge { .. }
                ),
                "cut at {cut}: {e:?}"
            );
            assert!(e.to_string().contains("truncated or corrupt file"), "{e}");
        }
        assert!(e.is_truncation());
    }
}

/// Which part of the file the message points at, for cuts inside each section.
#[test]
fn truncation_messages_name_the_section() {
    let c = Crafted::valid();
    let (bytes, layout) = c.bytes_and_layout();
    let msg = |cut: usize| {
        GgufFile::from_bytes(bytes[..cut].to_vec())
            .unwrap_err()
            .to_string()
    };
    assert!(msg(10).contains("header"), "{}", msg(10));
    // Inside the last string of the token list: after kv 0 (45 bytes), kv 1 (33), then the key,
    // type, element type and count of kv 2 (45) and its first two strings (11 + 9) and a length.
    let in_value = layout.kv_start + 45 + 33 + 45 + 11 + 9 + 8 + 1;
    let m = msg(in_value);
    assert!(
        m.contains("element 2 of array of key 'tokenizer.ggml.tokens'"),
        "{m}"
    );
    // Early in the kv section, the kv count itself no longer fits.
    assert!(msg(30).contains("kv count"), "{}", msg(30));
    // Inside the dims of the third tensor, after 48 + 52 bytes of the first two infos. (Earlier
    // cuts leave less than 3 * 32 bytes, the least that three tensor infos take, and are reported
    // as a tensor count the file cannot hold.)
    let in_info = layout.infos_start + 48 + 52 + 8 + 6 + 4 + 3;
    assert!(
        msg(in_info).contains("info of tensor 'c.bias'"),
        "{}",
        msg(in_info)
    );
    let early = layout.infos_start + 50;
    assert!(msg(early).contains("tensor count"), "{}", msg(early));
}

// ---------------------------------------------------------------- random damage

/// Deterministic xorshift, so failures reproduce without a `rand` dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random byte flips, overwrites with extreme values, and cuts: never a panic, and any file that
/// is accepted must be fully usable.
#[test]
fn random_damage_never_panics() {
    let mut c = Crafted::valid();
    c.kvs.push(Kv::raw("nested", T_ARRAY, nested(3)));
    let base = c.bytes();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut rejected) = (0, 0);
    for _ in 0..20_000 {
        let mut b = base.clone();
        for _ in 0..1 + rng.below(4) {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len());
            match rng.below(4) {
                0 => b[at] ^= 1 << rng.below(8),
                1 => b[at] = rng.next() as u8,
                2 => {
                    let v = [0u64, 1, 0xFF, u32::MAX as u64, 1 << 63, u64::MAX][rng.below(6)];
                    let end = (at + 8).min(b.len());
                    b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
                }
                _ => b.truncate(at),
            }
        }
        match GgufFile::from_bytes(b) {
            Ok(f) => {
                accepted += 1;
                for t in f.tensors() {
                    assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
                }
                for (k, v) in f.metadata() {
                    let _ = (f.get_u32(k), f.get_str(k), v.to_string());
                }
            }
            Err(e) => {
                rejected += 1;
                assert!(!e.to_string().is_empty());
            }
        }
    }
    assert!(
        accepted > 100 && rejected > 10_000,
        "{accepted} accepted, {rejected} rejected"
    );
}
