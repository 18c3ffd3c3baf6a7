//! Byte-level BPE: the merge engine and the vocabulary tables it runs on.
//!
//! Two merge rules are supported, because the file formats define different BPEs:
//! - merge lists (`tokenizer.json`, `merges.txt`): a pair may merge only if it is listed, and the
//!   earliest listed pair merges first (HF `tokenizers`);
//! - rank files (`.tiktoken`): any adjacent pair whose concatenation is a token may merge, the
//!   lowest-ranked concatenation first (`tiktoken`).
//!
//! Both reduce to a table `(left id, right id) -> (priority, merged id)`; for rank files it holds
//! every two-token split of every token. The encoder repeatedly merges the lowest-priority
//! adjacent pair, the leftmost on ties, exactly as both references do. Short pieces use an array
//! scan; long ones a heap over a linked list (O(n log n)), so no input is quadratic.

use super::error::{Result, format_err};
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, non-cryptographic hasher (FxHash's multiply-rotate): keys are token ids and
/// token bytes from a trusted vocabulary, and the default SipHash would dominate encoding time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i as u64);
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxMap<K, V> = HashMap<K, V, FxBuild>;

/// How pairs become mergeable (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MergeRule {
    /// Only listed merges, in list order (HF `tokenizers`).
    MergeList,
    /// Any split of a token, by the token's rank (`tiktoken`).
    Ranks,
}

/// Pieces at least this long use the heap merger; shorter ones the array scan.
const HEAP_THRESHOLD: usize = 64;

/// The regular (BPE) vocabulary: token bytes, the byte-to-token map and the merge table.
pub struct BpeModel {
    /// Bytes of token `id` are `bytes[offsets[id]..offsets[id + 1]]`; absent ids are empty.
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    present: Vec<bool>,
    byte_token: [u32; 256],
    by_bytes: ByteIndex,
    pairs: PairTable,
    /// `(priority, merged id)` for every pair of single bytes, indexed by `(b0 << 8) | b1`: the
    /// first round of pair look-ups in every piece, without hashing.
    byte_pairs: Vec<(u32, u32)>,
    /// Token ids whose own bytes BPE-encode to that single token: for them the whole-piece
    /// look-up is exact, so encoding may skip the merge loop.
    whole: Vec<bool>,
    rule: MergeRule,
}

/// `(left, right)` -> `(priority, merged id)`, as one flat open-addressing array: a look-up is
/// usually one cache line, where a general hash map touches a control group and an entry (the
/// merge loop is bound by these misses).
struct PairTable {
    slots: Vec<(u64, u32, u32)>,
    shift: u32,
    len: usize,
}

const EMPTY_PAIR: u64 = u64::MAX;

impl PairTable {
    fn new(map: &FxMap<u64, (u32, u32)>) -> PairTable {
        let capacity = (map.len() * 2).next_power_of_two().max(16);
        let shift = 64 - capacity.trailing_zeros();
        let mut slots = vec![(EMPTY_PAIR, 0, 0); capacity];
        for (&key, &(rank, merged)) in map {
            let mut i = (key.wrapping_mul(FX_SEED) >> shift) as usize;
            while slots[i].0 != EMPTY_PAIR {
                i = (i + 1) & (capacity - 1);
            }
            slots[i] = (key, rank, merged);
        }
        PairTable {
            slots,
            shift,
            len: map.len(),
        }
    }

    #[inline]
    fn get(&self, key: u64) -> Option<(u32, u32)> {
        if key == EMPTY_PAIR {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = (key.wrapping_mul(FX_SEED) >> self.shift) as usize;
        loop {
            let (k, rank, merged) = self.slots[i];
            if k == key {
                return Some((rank, merged));
            }
            if k == EMPTY_PAIR {
                return None;
            }
            i = (i + 1) & mask;
        }
    }
}

/// Token bytes -> id, as an open-addressing table over the model's own byte arena (no key
/// copies): each slot holds 32 bits of the hash and the id + 1 (0 = empty).
struct ByteIndex {
    slots: Vec<(u32, u32)>,
    shift: u32,
    len: usize,
}

#[inline]
fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.add(bytes.len() as u64);
    // Fx leaves the low bits weak; fold the high ones in.
    h.0 ^ (h.0 >> 29)
}

/// Slice equality written out for the short slices tokens are: `==` on `[u8]` calls `memcmp`.
#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

impl ByteIndex {
    fn new(map: &FxMap<Box<[u8]>, u32>) -> ByteIndex {
        let capacity = (map.len() * 2).next_power_of_two().max(16);
        let shift = 64 - capacity.trailing_zeros();
        let mut slots = vec![(0u32, 0u32); capacity];
        for (bytes, &id) in map {
            let h = hash_bytes(bytes);
            let mut i = (h.wrapping_mul(FX_SEED) >> shift) as usize;
            while slots[i].1 != 0 {
                i = (i + 1) & (capacity - 1);
            }
            slots[i] = (h as u32, id + 1);
        }
        ByteIndex {
            slots,
            shift,
            len: map.len(),
        }
    }

    #[inline]
    fn get(&self, bytes: &[u8], model: &BpeModel) -> Option<u32> {
        let h = hash_bytes(bytes);
        let mask = self.slots.len() - 1;
        let mut i = (h.wrapping_mul(FX_SEED) >> self.shift) as usize;
        loop {
            let (tag, id1) = self.slots[i];
            if id1 == 0 {
                return None;
            }
            if tag == h as u32 && model.token(id1 - 1).is_some_and(|t| bytes_eq(t, bytes)) {
                return Some(id1 - 1);
            }
            i = (i + 1) & mask;
        }
    }
}

#[inline]
fn pair_key(left: u32, right: u32) -> u64 {
    ((left as u64) << 32) | right as u64
}

/// Working memory reused across pieces and calls, so encoding allocates nothing per token.
#[derive(Default)]
pub struct Scratch {
    symbols: Vec<u32>,
    ranks: Vec<(u32, u32)>,
    nodes: Vec<Node>,
    heap: BinaryHeap<std::cmp::Reverse<(u32, u32, u32)>>,
}

#[derive(Clone, Copy)]
struct Node {
    id: u32,
    prev: u32,
    next: u32,
    alive: bool,
}

const NONE: u32 = u32::MAX;
/// Placeholder id for a byte with no token (only bytes that cannot occur in UTF-8).
const NO_TOKEN: u32 = u32::MAX;

impl BpeModel {
    /// Builds the model from `(id, bytes)` tokens and, for [`MergeRule::MergeList`], the merges
    /// as `(left id, right id)` in priority order. Every single byte must be a token.
    pub fn new(
        tokens: Vec<(u32, Vec<u8>)>,
        merges: &[(u32, u32)],
        rule: MergeRule,
    ) -> Result<BpeModel> {
        let max_id = tokens.iter().map(|t| t.0).max().unwrap_or(0);
        // Tables are indexed by id, so ids must be dense-ish; this also bounds what a corrupt
        // file can make us allocate.
        if max_id as usize >= 2 * tokens.len() + 1024 {
            return Err(format_err(format!(
                "token ids are too sparse: largest id {max_id} for {} tokens",
                tokens.len()
            )));
        }
        let n = max_id as usize + 1;
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut by_bytes: FxMap<Box<[u8]>, u32> = FxMap::default();
        for (id, b) in tokens {
            if b.is_empty() {
                return Err(format_err(format!("token {id} is empty")));
            }
            if slots[id as usize].is_some() {
                return Err(format_err(format!("token id {id} appears twice")));
            }
            if by_bytes.insert(b.clone().into_boxed_slice(), id).is_some() {
                return Err(format_err(format!(
                    "token {id} ({}) appears twice",
                    escape_bytes(&b)
                )));
            }
            slots[id as usize] = Some(b);
        }
        // Bytes that never occur in UTF-8 (C0, C1, F5-FF) may lack a token (GPT-NeoX has none):
        // input is always text, so they are never looked up.
        let mut byte_token = [NO_TOKEN; 256];
        for (b, slot) in byte_token.iter_mut().enumerate() {
            match by_bytes.get(&[b as u8][..]) {
                Some(&id) => *slot = id,
                None if b == 0xc0 || b == 0xc1 || b >= 0xf5 => {}
                None => {
                    return Err(format_err(format!(
                        "byte 0x{b:02x} has no token; a byte-level vocabulary needs every byte \
                         that occurs in UTF-8"
                    )));
                }
            }
        }
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut present = Vec::with_capacity(n);
        offsets.push(0u32);
        for slot in &slots {
            present.push(slot.is_some());
            if let Some(b) = slot {
                bytes.extend_from_slice(b);
            }
            let end = u32::try_from(bytes.len())
                .map_err(|_| format_err("vocabulary bytes exceed 4 GiB"))?;
            offsets.push(end);
        }
        let mut pairs: FxMap<u64, (u32, u32)> = FxMap::default();
        match rule {
            MergeRule::MergeList => {
                let mut joined = Vec::new();
                for (rank, &(l, r)) in merges.iter().enumerate() {
                    let get = |id: u32| slots.get(id as usize).and_then(|s| s.as_deref());
                    let (Some(lb), Some(rb)) = (get(l), get(r)) else {
                        return Err(format_err(format!("merge {rank} names an unknown token")));
                    };
                    joined.clear();
                    joined.extend_from_slice(lb);
                    joined.extend_from_slice(rb);
                    let merged = *by_bytes.get(&joined[..]).ok_or_else(|| {
                        format_err(format!(
                            "merge {rank} ({} + {}) produces a string that is not in the vocabulary",
                            escape_bytes(lb),
                            escape_bytes(rb)
                        ))
                    })?;
                    // HF keeps the first occurrence of a duplicated merge.
                    pairs.entry(pair_key(l, r)).or_insert((rank as u32, merged));
                }
            }
            MergeRule::Ranks => {
                for (id, slot) in slots.iter().enumerate() {
                    let Some(b) = slot else { continue };
                    for k in 1..b.len() {
                        if let (Some(&l), Some(&r)) = (by_bytes.get(&b[..k]), by_bytes.get(&b[k..]))
                        {
                            pairs.insert(pair_key(l, r), (id as u32, id as u32));
                        }
                    }
                }
            }
        }
        let index = ByteIndex::new(&by_bytes);
        let byte_pairs = (0..=0xffffu32)
            .map(|p| {
                let (l, r) = (
                    byte_token[(p >> 8) as usize],
                    byte_token[(p & 0xff) as usize],
                );
                pairs.get(&pair_key(l, r)).copied().unwrap_or((u32::MAX, 0))
            })
            .collect();
        let mut model = BpeModel {
            bytes,
            offsets,
            present,
            byte_token,
            by_bytes: index,
            pairs: PairTable::new(&pairs),
            byte_pairs,
            whole: vec![false; n],
            rule,
        };
        model.whole = match rule {
            // tiktoken itself looks a whole piece up before merging, so the shortcut is its rule.
            MergeRule::Ranks => model.present.clone(),
            MergeRule::MergeList => {
                let mut scratch = Scratch::default();
                let mut out = Vec::new();
                (0..n as u32)
                    .map(|id| {
                        let Some(b) = model.token(id) else {
                            return false;
                        };
                        out.clear();
                        model.merge_piece(b, &mut out, &mut scratch);
                        out.len() == 1 && out[0] == id
                    })
                    .collect()
            }
        };
        Ok(model)
    }

    /// The merge rule this model follows.
    pub fn rule(&self) -> MergeRule {
        self.rule
    }

    /// One past the largest token id.
    pub fn id_limit(&self) -> u32 {
        self.present.len() as u32
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.by_bytes.len
    }

    /// Whether the vocabulary is empty (never true for a loaded model, which has 256 bytes).
    pub fn is_empty(&self) -> bool {
        self.by_bytes.len == 0
    }

    /// The bytes of token `id`, if it exists.
    #[inline]
    pub fn token(&self, id: u32) -> Option<&[u8]> {
        let i = id as usize;
        if !*self.present.get(i)? {
            return None;
        }
        let start = *self.offsets.get(i)? as usize;
        let end = *self.offsets.get(i + 1)? as usize;
        self.bytes.get(start..end)
    }

    /// The id of the token with exactly these bytes.
    pub fn id_of(&self, bytes: &[u8]) -> Option<u32> {
        self.by_bytes.get(bytes, self)
    }

    /// The number of merge-table entries.
    pub fn merge_count(&self) -> usize {
        self.pairs.len
    }

    #[inline]
    fn pair(&self, left: u32, right: u32) -> Option<(u32, u32)> {
        self.pairs.get(pair_key(left, right))
    }

    /// Appends the BPE encoding of one pre-tokenised piece (UTF-8 text) to `out`.
    #[inline]
    pub(crate) fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        if piece.len() > 1
            && let Some(id) = self.by_bytes.get(piece, self)
            && self.whole.get(id as usize).copied().unwrap_or(false)
        {
            out.push(id);
            return;
        }
        self.merge_piece(piece, out, scratch);
    }

    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        match piece.len() {
            0 => {}
            1 => out.push(self.byte_token[piece[0] as usize]),
            n if n < HEAP_THRESHOLD => self.merge_short(piece, out, scratch),
            _ => self.merge_long(piece, out, scratch),
        }
    }

    fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let symbols = &mut scratch.symbols;
        let ranks = &mut scratch.ranks;
        symbols.clear();
        symbols.extend(piece.iter().map(|&b| self.byte_token[b as usize]));
        ranks.clear();
        ranks.extend(
            piece
                .windows(2)
                .map(|w| self.byte_pairs[((w[0] as usize) << 8) | w[1] as usize]),
        );
        loop {
            let mut best = u32::MAX;
            let mut at = 0;
            for (i, &(r, _)) in ranks.iter().enumerate() {
                if r < best {
                    best = r;
                    at = i;
                }
            }
            if best == u32::MAX {
                break;
            }
            let merged = ranks[at].1;
            symbols[at] = merged;
            symbols.remove(at + 1);
            ranks.remove(at);
            let none = (u32::MAX, 0);
            if at > 0 {
                ranks[at - 1] = self.pair(symbols[at - 1], merged).unwrap_or(none);
            }
            if at < ranks.len() {
                ranks[at] = self.pair(merged, symbols[at + 1]).unwrap_or(none);
            }
        }
        out.extend_from_slice(symbols);
    }

    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>, scratch: &mut Scratch) {
        let nodes = &mut scratch.nodes;
        let heap = &mut scratch.heap;
        nodes.clear();
        heap.clear();
        let n = piece.len();
        nodes.extend(piece.iter().enumerate().map(|(i, &b)| Node {
            id: self.byte_token[b as usize],
            prev: if i == 0 { NONE } else { i as u32 - 1 },
            next: if i + 1 == n { NONE } else { i as u32 + 1 },
            alive: true,
        }));
        // Heap entries are (priority, left position, right position); positions keep text order,
        // so ties pop leftmost first like the references.
        for i in 0..n - 1 {
            if let Some((rank, _)) = self.pair(nodes[i].id, nodes[i + 1].id) {
                heap.push(std::cmp::Reverse((rank, i as u32, i as u32 + 1)));
            }
        }
        while let Some(std::cmp::Reverse((rank, left, right))) = heap.pop() {
            let (l, r) = (left as usize, right as usize);
            if !nodes[l].alive || !nodes[r].alive || nodes[l].next != right {
                continue;
            }
            let Some((current, merged)) = self.pair(nodes[l].id, nodes[r].id) else {
                continue;
            };
            if current != rank {
                continue;
            }
            nodes[l].id = merged;
            nodes[r].alive = false;
            let after = nodes[r].next;
            nodes[l].next = after;
            if after != NONE {
                nodes[after as usize].prev = left;
                if let Some((rk, _)) = self.pair(merged, nodes[after as usize].id) {
                    heap.push(std::cmp::Reverse((rk, left, after)));
                }
            }
            let before = nodes[l].prev;
            if before != NONE
                && let Some((rk, _)) = self.pair(nodes[before as usize].id, merged)
            {
                heap.push(std::cmp::Reverse((rk, before, left)));
            }
        }
        let mut i = 0u32;
        while i != NONE {
            out.push(nodes[i as usize].id);
            i = nodes[i as usize].next;
        }
    }
}

/// Bytes as a readable string: printable ASCII as is, everything else as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn byte_tokens() -> Vec<(u32, Vec<u8>)> {
        (0..=255u8).map(|b| (b as u32, vec![b])).collect()
    }

    #[test]
    fn merge_list_order_decides_and_ties_go_left() {
        let mut tokens = byte_tokens();
        tokens.push((256, b"aa".to_vec()));
        tokens.push((257, b"ab".to_vec()));
        let merges = [(b'a' as u32, b'a' as u32), (b'a' as u32, b'b' as u32)];
        let m = BpeModel::new(tokens, &merges, MergeRule::MergeList).unwrap();
        let mut out = Vec::new();
        let mut s = Scratch::default();
        m.encode_piece(b"aaab", &mut out, &mut s);
        assert_eq!(out, vec![256, 257]);
        out.clear();
        m.encode_piece(b"aaa", &mut out, &mut s);
        assert_eq!(out, vec![256, b'a' as u32]);
    }

    #[test]
    fn long_and_short_mergers_agree() {
        let mut tokens = byte_tokens();
        let words: [&[u8]; 6] = [b"ab", b"abab", b"ba", b"aba", b"bab", b"abb"];
        let mut merges = Vec::new();
        for (i, w) in words.iter().enumerate() {
            tokens.push((256 + i as u32, w.to_vec()));
        }
        let id = |b: &[u8], t: &Vec<(u32, Vec<u8>)>| t.iter().find(|x| x.1 == b).unwrap().0;
        merges.push((id(b"a", &tokens), id(b"b", &tokens)));
        merges.push((id(b"ab", &tokens), id(b"ab", &tokens)));
        merges.push((id(b"b", &tokens), id(b"a", &tokens)));
        merges.push((id(b"ab", &tokens), id(b"a", &tokens)));
        merges.push((id(b"b", &tokens), id(b"ab", &tokens)));
        merges.push((id(b"ab", &tokens), id(b"b", &tokens)));
        for rule in [MergeRule::MergeList, MergeRule::Ranks] {
            let m = BpeModel::new(tokens.clone(), &merges, rule).unwrap();
            let mut s = Scratch::default();
            let mut x: u64 = 12345;
            for len in 2..200 {
                let piece: Vec<u8> = (0..len)
                    .map(|_| {
                        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                        if (x >> 33) & 1 == 0 { b'a' } else { b'b' }
                    })
                    .collect();
                let (mut a, mut b) = (Vec::new(), Vec::new());
                m.merge_short(&piece, &mut a, &mut s);
                m.merge_long(&piece, &mut b, &mut s);
                assert_eq!(a, b, "{rule:?} {}", String::from_utf8_lossy(&piece));
            }
        }
    }

    #[test]
    fn missing_byte_and_bad_merge_are_errors() {
        let mut tokens = byte_tokens();
        tokens.retain(|t| t.1 != b"a");
        assert!(BpeModel::new(tokens, &[], MergeRule::MergeList).is_err());
        // Bytes that cannot occur in UTF-8 may be missing.
        let mut tokens = byte_tokens();
        tokens.retain(|t| t.1[0] < 0xf5);
        assert!(BpeModel::new(tokens, &[], MergeRule::MergeList).is_ok());
        let tokens = byte_tokens();
        assert!(BpeModel::new(tokens, &[(1, 2)], MergeRule::MergeList).is_err());
    }
}
