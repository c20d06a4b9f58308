//! RFC 9162 (Certificate Transparency 2.0) Merkle tree hashes and consistency proofs, with
//! memory that does not grow with the log (pure).
//!
//! Leaves are `SHA-256(0x00 || entry)`, interior nodes `SHA-256(0x01 || left || right)`, the
//! empty tree `SHA-256("")` (RFC 9162 §2.1.1). The writer never holds the tree: a
//! [`Frontier`] keeps only the roots of the perfect subtrees that make up the first `n`
//! leaves (at most 64 hashes), which is enough to append, to compute the root at `n`, and,
//! together with the leaf hashes appended since, to prove that the tree at `n` is a prefix
//! of a later tree (RFC 9162 §2.1.4.1). [`verify_consistency`] is §2.1.4.2.
//!
//! Why not a crate: `ct-merkle` keeps every leaf in memory and is built on `digest` 0.11
//! (this tree uses `sha2` 0.10); `tlog_tiles` (Go's `sumdb/tlog` ported) reads stored hashes
//! of the whole tree and brings `url`/`idna`. The algorithms are the RFC's, tested against
//! the test vectors of transparency-dev/merkle (`testonly/constants.go`, `proof/verify_test.go`).

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// `SHA-256(0x00 || entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(entry);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The roots of the perfect subtrees covering the first `size` leaves, largest (leftmost)
/// first: one per set bit of `size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    nodes: Vec<Hash>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// A frontier from stored parts; `None` when the node count does not match the size.
    pub fn from_parts(size: u64, nodes: Vec<Hash>) -> Option<Frontier> {
        (nodes.len() == size.count_ones() as usize).then_some(Frontier { size, nodes })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn nodes(&self) -> &[Hash] {
        &self.nodes
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut n = self.size;
        while n & 1 == 1 {
            let Some(left) = self.nodes.pop() else { break };
            hash = node_hash(&left, &hash);
            n >>= 1;
        }
        self.nodes.push(hash);
        self.size += 1;
    }

    /// The tree's root hash at this size.
    pub fn root(&self) -> Hash {
        let mut nodes = self.nodes.iter().rev();
        let Some(last) = nodes.next() else {
            return empty_root();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }

    /// The ranges `[lo, hi)` of the frontier's nodes, in order.
    fn ranges(&self) -> Vec<(u64, u64)> {
        let mut lo = 0;
        let mut out = Vec::with_capacity(self.nodes.len());
        for bit in (0..64).rev() {
            let width = 1u64 << bit;
            if self.size & width != 0 {
                out.push((lo, lo + width));
                lo += width;
            }
        }
        out
    }

    /// The hash of `[lo, size)` when `lo` is where one of the frontier's nodes starts.
    fn suffix_hash(&self, lo: u64) -> Option<Hash> {
        let ranges = self.ranges();
        let first = ranges.iter().position(|(start, _)| *start == lo)?;
        let tail = self.nodes.get(first..)?;
        let (last, rest) = tail.split_last()?;
        Some(
            rest.iter()
                .rev()
                .fold(*last, |right, left| node_hash(left, &right)),
        )
    }

    /// The hash of one frontier node `[lo, hi)`.
    fn node_at(&self, lo: u64, hi: u64) -> Option<Hash> {
        let ranges = self.ranges();
        let i = ranges.iter().position(|r| *r == (lo, hi))?;
        self.nodes.get(i).copied()
    }
}

/// The hash of the tree over `leaves` (RFC 9162 MTH), recursively.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = largest_power_of_two_below(n as u64) as usize;
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

/// The largest power of two strictly less than `n` (`n >= 2`).
fn largest_power_of_two_below(n: u64) -> u64 {
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The consistency proof (RFC 9162 §2.1.4.1) from the tree of `old.size()` leaves to the
/// tree of `old.size() + new_leaves.len()` leaves, from the old tree's frontier and the leaf
/// hashes appended since. `None` only on an internal inconsistency (never for a frontier
/// built by `push`).
pub fn consistency_proof(old: &Frontier, new_leaves: &[Hash]) -> Option<Vec<Hash>> {
    let m = old.size();
    let n = m + new_leaves.len() as u64;
    if m == 0 || m == n {
        return Some(Vec::new());
    }
    let mut proof = Vec::new();
    subproof(old, new_leaves, m, 0, n, true, &mut proof)?;
    Some(proof)
}

/// SUBPROOF(m, D[lo:hi], b) of RFC 9162, where `m` counts from `lo`.
fn subproof(
    old: &Frontier,
    new_leaves: &[Hash],
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    proof: &mut Vec<Hash>,
) -> Option<()> {
    let n = hi - lo;
    if m == n {
        if !whole {
            // [lo, old.size()): the rest of the old tree's frontier from `lo`.
            proof.push(old.suffix_hash(lo)?);
        }
        return Some(());
    }
    let k = largest_power_of_two_below(n);
    if m <= k {
        subproof(old, new_leaves, m, lo, lo + k, whole, proof)?;
        proof.push(range_hash(old, new_leaves, lo + k, hi)?);
    } else {
        subproof(old, new_leaves, m - k, lo + k, hi, false, proof)?;
        proof.push(range_hash(old, new_leaves, lo, lo + k)?);
    }
    Some(())
}

/// The hash of `[lo, hi)`: either a node of the old frontier or a range of new leaves.
fn range_hash(old: &Frontier, new_leaves: &[Hash], lo: u64, hi: u64) -> Option<Hash> {
    let m = old.size();
    if lo >= m {
        let a = usize::try_from(lo - m).ok()?;
        let b = usize::try_from(hi - m).ok()?;
        return Some(mth(new_leaves.get(a..b)?));
    }
    old.node_at(lo, hi)
}

/// Verifies that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 §2.1.4.2).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), String> {
    if first > second {
        return Err(format!(
            "the first size {first} is larger than the second {second}"
        ));
    }
    if first == second {
        return if proof.is_empty() && first_root == second_root {
            Ok(())
        } else if first_root != second_root {
            Err(format!("two different roots for the same size {first}"))
        } else {
            Err("a proof between equal sizes must be empty".into())
        };
    }
    if first == 0 {
        // The empty tree is a prefix of every tree.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err("a proof from the empty tree must be empty".into())
        };
    }
    if proof.is_empty() {
        return Err("empty consistency proof".into());
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (first - 1, second - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err("the proof is longer than the trees allow".into());
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err("the proof is shorter than the trees need".into());
    }
    if &fr != first_root {
        return Err(format!(
            "the proof does not lead to the root of the tree of {first} leaves"
        ));
    }
    if &sr != second_root {
        return Err(format!(
            "the proof does not lead to the root of the tree of {second} leaves"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Hash {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    /// transparency-dev/merkle `testonly/constants.go`: `LeafInputs`.
    fn leaves() -> Vec<Hash> {
        [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|s| leaf_hash(&unhex(s)))
        .collect()
    }

    /// The same file's `RootHashes`, by size.
    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn frontier(n: usize) -> Frontier {
        let mut f = Frontier::new();
        for leaf in &leaves()[..n] {
            f.push(*leaf);
        }
        f
    }

    #[test]
    fn roots_match_the_reference_vectors() {
        for (n, root) in ROOTS.iter().enumerate() {
            assert_eq!(frontier(n).root(), hex(root), "size {n}");
            assert_eq!(mth(&leaves()[..n]), hex(root), "mth size {n}");
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_vectors() {
        // transparency-dev/merkle `proof/verify_test.go`: `consistencyProofs`.
        let cases: [(usize, usize, &[&str]); 4] = [
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                7,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (m, n, expected) in cases {
            let proof = consistency_proof(&frontier(m), &leaves()[m..n]).unwrap();
            let expected: Vec<Hash> = expected.iter().map(|h| hex(h)).collect();
            assert_eq!(proof, expected, "{m} -> {n}");
            verify_consistency(m as u64, n as u64, &hex(ROOTS[m]), &hex(ROOTS[n]), &proof).unwrap();
        }
    }

    #[test]
    fn every_pair_proves_and_every_tampering_fails() {
        let leaves: Vec<Hash> = (0u32..70).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for m in 0..leaves.len() {
            let mut old = Frontier::new();
            for l in &leaves[..m] {
                old.push(*l);
            }
            for n in m..=leaves.len() {
                let proof = consistency_proof(&old, &leaves[m..n]).unwrap();
                let new_root = mth(&leaves[..n]);
                verify_consistency(m as u64, n as u64, &old.root(), &new_root, &proof)
                    .unwrap_or_else(|e| panic!("{m} -> {n}: {e}"));
                if m > 0 && m < n {
                    // A different old root, a changed node, a missing node: all refused.
                    let mut bad_root = old.root();
                    bad_root[0] ^= 1;
                    assert!(
                        verify_consistency(m as u64, n as u64, &bad_root, &new_root, &proof)
                            .is_err()
                    );
                    for i in 0..proof.len() {
                        let mut bad = proof.clone();
                        bad[i][31] ^= 0x80;
                        assert!(
                            verify_consistency(m as u64, n as u64, &old.root(), &new_root, &bad)
                                .is_err(),
                            "{m} -> {n}, node {i}"
                        );
                    }
                    let short = &proof[..proof.len() - 1];
                    assert!(
                        verify_consistency(m as u64, n as u64, &old.root(), &new_root, short)
                            .is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn frontier_round_trips_and_refuses_a_wrong_node_count() {
        let f = frontier(7);
        let back = Frontier::from_parts(7, f.nodes().to_vec()).unwrap();
        assert_eq!(back.root(), f.root());
        assert!(Frontier::from_parts(8, f.nodes().to_vec()).is_none());
    }
}
