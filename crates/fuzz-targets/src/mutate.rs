//! Deterministic mutations for the in-process fuzz smoke: the same seed inputs and the same
//! generator state give the same mutated inputs on every machine, so a crash the smoke finds in
//! CI is found again by hand. No coverage feedback: that is libFuzzer's job (`fuzz/`); the
//! smoke only keeps the targets from rotting between libFuzzer runs.

/// splitmix64: a tiny, well-distributed, reproducible generator.
#[derive(Clone, Debug)]
pub struct Mutator(u64);

/// Values that steer readers wrong when planted where offsets, counts and sizes live.
const EXTREMES: [u64; 12] = [
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0xffff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

impl Mutator {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Mutator {
        Mutator(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Where to mutate in `len` bytes: a third of the time in the first 4 KiB (file headers),
    /// a third in the last 4 KiB (ELF section headers, a zip's central directory), else anywhere.
    fn offset(&mut self, len: usize) -> usize {
        match self.next() % 3 {
            0 => self.below(len.min(4096)),
            1 => len - 1 - self.below(len.min(4096)),
            _ => self.below(len),
        }
    }

    /// `input` changed by one to four stacked mutations, each one of: flip a bit, set a byte,
    /// plant an extreme 1-, 2-, 4- or 8-byte little-endian value, add a small delta to a 32-bit
    /// word, zero or erase a run, insert random bytes, copy a run within the input, truncate,
    /// or splice in the bytes of `other` (another seed) at the same place.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut bytes = input.to_vec();
        for _ in 0..=self.below(4) {
            self.mutate_once(&mut bytes, other);
        }
        bytes
    }

    fn mutate_once(&mut self, bytes: &mut Vec<u8>, other: &[u8]) {
        if bytes.is_empty() {
            let len = 1 + self.below(64);
            bytes.extend((0..len).map(|_| self.next() as u8));
            return;
        }
        let len = bytes.len();
        let at = self.offset(len);
        match self.next() % 10 {
            0 => bytes[at] ^= 1 << (self.next() % 8),
            1 => bytes[at] = self.next() as u8,
            2 => {
                let value = EXTREMES[self.below(EXTREMES.len())].to_le_bytes();
                let width = 1 << self.below(4);
                let end = (at + width).min(len);
                bytes[at..end].copy_from_slice(&value[..end - at]);
            }
            3 => {
                let end = (at + 4).min(len);
                let mut word = [0; 4];
                word[..end - at].copy_from_slice(&bytes[at..end]);
                let delta = self.below(33) as u32;
                let value = if self.next().is_multiple_of(2) {
                    u32::from_le_bytes(word).wrapping_add(delta)
                } else {
                    u32::from_le_bytes(word).wrapping_sub(delta)
                };
                bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
            }
            4 => {
                let end = (at + 1 + self.below(256)).min(len);
                bytes[at..end].fill(0);
            }
            5 => {
                let end = (at + 1 + self.below(64)).min(len);
                bytes.drain(at..end);
            }
            6 => {
                let count = 1 + self.below(64);
                let insert: Vec<u8> = (0..count).map(|_| self.next() as u8).collect();
                bytes.splice(at..at, insert);
            }
            7 => {
                let from = self.below(len);
                let count = (1 + self.below(256)).min(len - from).min(len - at);
                bytes.copy_within(from..from + count, at);
            }
            8 => bytes.truncate(at),
            _ => {
                if at < other.len() {
                    let end = (at + 1 + self.below(1024)).min(len).min(other.len());
                    bytes[at..end].copy_from_slice(&other[at..end]);
                } else {
                    bytes[at] = !bytes[at];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_mutations_and_inputs_change() {
        let input: Vec<u8> = (0..=255).collect();
        let other = vec![0xaa; 300];
        let run = |seed| {
            let mut mutator = Mutator::new(seed);
            (0..200)
                .map(|_| mutator.mutate(&input, &other))
                .collect::<Vec<_>>()
        };
        let first = run(7);
        assert_eq!(first, run(7));
        assert_ne!(first, run(8));
        let changed = first.iter().filter(|m| **m != input).count();
        assert!(
            changed > 180,
            "only {changed} of 200 mutations changed the input"
        );
        // Every mutation kind is reachable, the length-changing ones included.
        assert!(first.iter().any(|m| m.len() < input.len()));
        assert!(first.iter().any(|m| m.len() > input.len()));
        assert!(
            first
                .iter()
                .any(|m| m.windows(2).any(|w| w == [0xaa, 0xaa]))
        );
    }

    #[test]
    fn empty_and_tiny_inputs_are_mutated_without_panicking() {
        let mut mutator = Mutator::new(1);
        for len in 0..8 {
            let input = vec![0x41; len];
            for _ in 0..500 {
                let mutated = mutator.mutate(&input, &[]);
                assert!(mutated.len() <= len + 4 * 64);
            }
        }
    }
}
