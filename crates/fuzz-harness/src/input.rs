//! Reading and writing the fuzz input formats: a fixed-size header, then sections.

/// Separates the sections of an input (never part of UTF-8 text).
pub const SECTION: u8 = 0xFF;
/// Separates the items of a list inside a section (never part of UTF-8 text).
pub const ITEM: u8 = 0xFE;

/// An input split into its header (`N` bytes, zero-padded when the input is shorter) and the
/// sections after it.
pub struct Parts<'a, const N: usize> {
    pub header: [u8; N],
    sections: Vec<&'a [u8]>,
}

impl<'a, const N: usize> Parts<'a, N> {
    pub fn split(data: &'a [u8]) -> Self {
        let mut header = [0u8; N];
        let n = data.len().min(N);
        header[..n].copy_from_slice(&data[..n]);
        let sections = data[n..].split(|&b| b == SECTION).collect();
        Parts { header, sections }
    }

    /// Section `i` (empty when the input has fewer).
    pub fn section(&self, i: usize) -> &'a [u8] {
        self.sections.get(i).copied().unwrap_or(&[])
    }

    /// Section `i` as text (invalid UTF-8 replaced).
    pub fn text(&self, i: usize) -> String {
        String::from_utf8_lossy(self.section(i)).into_owned()
    }

    /// Section `i` split into its `ITEM`-separated items (none for an empty section).
    pub fn items(&self, i: usize) -> Vec<&'a [u8]> {
        let s = self.section(i);
        if s.is_empty() {
            return Vec::new();
        }
        s.split(|&b| b == ITEM).collect()
    }

    pub fn u16_at(&self, i: usize) -> u16 {
        u16::from_le_bytes([self.header[i], self.header[i + 1]])
    }
}

/// Builds an input: header bytes, then sections joined by `SECTION`.
pub struct Writer {
    out: Vec<u8>,
    first_section: bool,
}

impl Writer {
    pub fn new(header: &[u8]) -> Self {
        Writer {
            out: header.to_vec(),
            first_section: true,
        }
    }

    pub fn section(&mut self, bytes: &[u8]) -> &mut Self {
        if !self.first_section {
            self.out.push(SECTION);
        }
        self.first_section = false;
        self.out.extend_from_slice(bytes);
        self
    }

    pub fn items<T: AsRef<[u8]>>(&mut self, items: &[T]) -> &mut Self {
        let mut joined = Vec::new();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                joined.push(ITEM);
            }
            joined.extend_from_slice(item.as_ref());
        }
        self.section(&joined)
    }

    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

/// Text that may go into a section: the separators are not valid UTF-8, so any `&str` is safe.
pub fn lossless(s: &str) -> &[u8] {
    debug_assert!(!s.bytes().any(|b| b == SECTION || b == ITEM));
    s.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip() {
        let bytes = Writer::new(&[1, 2, 3])
            .section(b"text")
            .items(&["a", "b c", ""])
            .section(b"")
            .finish();
        let p = Parts::<3>::split(&bytes);
        assert_eq!(p.header, [1, 2, 3]);
        assert_eq!(p.text(0), "text");
        assert_eq!(p.items(1), vec![&b"a"[..], b"b c", b""]);
        assert_eq!(p.section(2), b"");
        assert_eq!(p.section(9), b"");
    }

    #[test]
    fn short_input_pads_the_header() {
        let p = Parts::<4>::split(&[7]);
        assert_eq!(p.header, [7, 0, 0, 0]);
        assert_eq!(p.section(0), b"");
    }
}
