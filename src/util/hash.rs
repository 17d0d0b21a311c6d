//! Hashing for keys the operator's own tables supply.

/// A multiply-fold hasher: keys come from the operator's own tables, so std's DoS-resistant
/// SipHash buys nothing here and costs a third of the grouping time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FoldHasher(pub(crate) u64);

impl FoldHasher {
    pub(crate) fn mix(&mut self, v: u64) {
        let full = u128::from(self.0 ^ v) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (full as u64) ^ ((full >> 64) as u64);
    }
}

impl std::hash::Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.mix(v as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastHash = std::hash::BuildHasherDefault<FoldHasher>;
