//! Any bytes given to the GGUF reader yield a file or an error, never a panic, a hang or an
//! allocation larger than the input justifies; and a file it accepts is safe to use in full.

use rustorch_gguf::GgufFile;

pub fn gguf_reader(data: &[u8]) {
    let Ok(f) = GgufFile::from_bytes(data.to_vec()) else {
        return;
    };
    for t in f.tensors() {
        assert_eq!(f.tensor_data(t).len() as u64, t.n_bytes);
        assert_eq!(f.tensor(&t.name), Some(t));
    }
    for (key, value) in f.metadata() {
        let _ = value.to_string();
        let _ = (f.get_u64(key), f.get_str(key), f.get_f32_array(key));
    }
}
