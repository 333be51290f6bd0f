//! Merkle trees of RFC 9162 (Certificate Transparency 2.0) section 2.1: the shape, hashing and
//! proofs of each node's audit log (`docs/formats.md` §15).
//!
//! - Leaf hash `SHA-256(0x00 ‖ entry)`, interior node hash `SHA-256(0x01 ‖ left ‖ right)`, the
//!   empty tree's hash `SHA-256("")`.
//! - A tree of `n > 1` leaves splits at `k`, the largest power of two below `n`: the left subtree
//!   holds leaves `[0, k)`, the right `[k, n)`.
//! - Inclusion proofs (`PATH`) and consistency proofs (`PROOF`) as the RFC defines them, and their
//!   verification by the RFC's algorithms (sections 2.1.3.2 and 2.1.4.2), which never trust the
//!   proof's length or contents.
//!
//! Proof generation works over any [`Subtrees`] source: the leaf hashes of a whole tree (`O(n)`
//! hashing a proof, for tests and small logs), or a log's stored hashes of its perfect subtrees
//! (`O(log² n)` lookups a proof).

use sha2::{Digest, Sha256};

/// A SHA-256 value.
pub type Hash = [u8; 32];

/// The longest proof that can verify: one hash a level of a tree of up to 2⁶⁴ leaves.
pub const MAX_PROOF_LEN: usize = 64;

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not below the tree size, or the first size above the second.
    #[error("index or size out of range")]
    OutOfRange,
    /// More hashes than the tree has levels, or fewer than the path needs.
    #[error("proof of the wrong length")]
    WrongLength,
    /// The hashes do not lead to the expected root(s).
    #[error("proof does not match the root")]
    Mismatch,
}

/// `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    Sha256::new().chain_update([0x00]).chain_update(entry).finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new().chain_update([0x01]).chain_update(left).chain_update(right).finalize().into()
}

/// The largest power of two strictly below `n` (`n ≥ 2`).
fn split(n: u64) -> u64 {
    n.next_power_of_two() / 2
}

/// The root hash (`MTH`) of a tree with these leaf hashes.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => Sha256::digest([]).into(),
        [one] => *one,
        _ => {
            let k = split(leaves.len() as u64) as usize;
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Where proofs get their hashes: the root of any subtree of the RFC's shape.
///
/// Every subtree a proof needs starts at a multiple of a power of two and is either *perfect*
/// (`size` a power of two, `start` a multiple of it) or the right part of a split, so a log that
/// stores the hash of each perfect subtree once it is complete answers any of them with
/// `O(log n)` lookups ([`Subtrees::range`]).
pub trait Subtrees {
    /// Why a hash could not be read.
    type Error;

    /// The root of the perfect subtree of `size` leaves (a power of two) starting at `start` (a
    /// multiple of `size`).
    fn perfect(&self, start: u64, size: u64) -> Result<Hash, Self::Error>;

    /// `MTH` of leaves `[start, start + size)` (`size ≥ 1`), from perfect subtrees.
    fn range(&self, start: u64, size: u64) -> Result<Hash, Self::Error> {
        if size.is_power_of_two() && start % size == 0 {
            return self.perfect(start, size);
        }
        let k = split(size);
        Ok(node_hash(&self.range(start, k)?, &self.range(start + k, size - k)?))
    }
}

impl Subtrees for [Hash] {
    type Error = std::convert::Infallible;

    fn perfect(&self, start: u64, size: u64) -> Result<Hash, Self::Error> {
        Ok(root(&self[start as usize..(start + size) as usize]))
    }
}

/// The inclusion proof (`PATH`) of leaf `index` in the tree of `leaves`; `None` if the index is
/// out of range.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Option<Vec<Hash>> {
    match inclusion_proof_in(leaves, leaves.len() as u64, index) {
        Ok(proof) => proof,
        Err(never) => match never {},
    }
}

/// The inclusion proof of leaf `index` in the tree of the first `size` leaves of `tree`; `None`
/// if the index is not below the size.
pub fn inclusion_proof_in<T: Subtrees + ?Sized>(
    tree: &T,
    size: u64,
    index: u64,
) -> Result<Option<Vec<Hash>>, T::Error> {
    if index >= size {
        return Ok(None);
    }
    let mut proof = Vec::new();
    path(tree, index, 0, size, &mut proof)?;
    Ok(Some(proof))
}

/// `PATH(m, D[start:start + n])`.
fn path<T: Subtrees + ?Sized>(
    tree: &T,
    m: u64,
    start: u64,
    n: u64,
    out: &mut Vec<Hash>,
) -> Result<(), T::Error> {
    if n <= 1 {
        return Ok(());
    }
    let k = split(n);
    if m < k {
        path(tree, m, start, k, out)?;
        out.push(tree.range(start + k, n - k)?);
    } else {
        path(tree, m - k, start + k, n - k, out)?;
        out.push(tree.range(start, k)?);
    }
    Ok(())
}

/// The consistency proof (`PROOF`) between the tree of the first `first` leaves and the tree of
/// all `leaves`; `None` unless `first ≤ leaves.len()`. Empty when `first` is 0 or all of them.
pub fn consistency_proof(leaves: &[Hash], first: u64) -> Option<Vec<Hash>> {
    match consistency_proof_in(leaves, first, leaves.len() as u64) {
        Ok(proof) => proof,
        Err(never) => match never {},
    }
}

/// The consistency proof between the trees of the first `first` and the first `second` leaves
/// of `tree`; `None` unless `first ≤ second`.
pub fn consistency_proof_in<T: Subtrees + ?Sized>(
    tree: &T,
    first: u64,
    second: u64,
) -> Result<Option<Vec<Hash>>, T::Error> {
    if first > second {
        return Ok(None);
    }
    let mut proof = Vec::new();
    if first > 0 {
        subproof(tree, first, 0, second, true, &mut proof)?;
    }
    Ok(Some(proof))
}

/// `SUBPROOF(m, D[start:start + n], whole)`.
fn subproof<T: Subtrees + ?Sized>(
    tree: &T,
    m: u64,
    start: u64,
    n: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<(), T::Error> {
    if m == n {
        if !whole {
            out.push(tree.range(start, n)?);
        }
        return Ok(());
    }
    let k = split(n);
    if m <= k {
        subproof(tree, m, start, k, whole, out)?;
        out.push(tree.range(start + k, n - k)?);
    } else {
        subproof(tree, m - k, start + k, n - k, false, out)?;
        out.push(tree.range(start, k)?);
    }
    Ok(())
}

/// Verifies that `leaf` (a leaf hash) is leaf `index` of the tree of `size` leaves whose root is
/// `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::OutOfRange);
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength);
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if r != *root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// Verifies that the tree of `first` leaves with root `first_root` is a prefix of the tree of
/// `second` leaves with root `second_root` (RFC 9162 section 2.1.4.2). An empty first tree is a
/// prefix of every tree, with an empty proof.
pub fn verify_consistency(
    first: u64,
    second: u64,
    proof: &[Hash],
    first_root: &Hash,
    second_root: &Hash,
) -> Result<(), ProofError> {
    if first > second {
        return Err(ProofError::OutOfRange);
    }
    if proof.len() > MAX_PROOF_LEN {
        return Err(ProofError::WrongLength);
    }
    if first == second || first == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        if first == second && first_root != second_root {
            return Err(ProofError::Mismatch);
        }
        return Ok(());
    }
    // A first tree of a power-of-two size is a subtree of the second: its root starts the path.
    let mut path = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((start, rest)) = path.split_first() else { return Err(ProofError::WrongLength) };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*start, *start);
    for c in rest {
        if s == 0 {
            return Err(ProofError::WrongLength);
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::WrongLength);
    }
    if fr != *first_root || sr != *second_root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).expect("hex").try_into().expect("32 bytes")
    }

    /// The Certificate Transparency reference tree (RFC 6962's test data, used by every
    /// implementation: transparency-dev/merkle, the CT Go and C++ code): its leaves, the root of
    /// each prefix, and published proofs.
    const CT_LEAVES: [&str; 8] =
        ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"];
    const CT_ROOTS: [&str; 9] = [
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

    fn ct_leaves() -> Vec<Hash> {
        CT_LEAVES.iter().map(|l| leaf_hash(&hex::decode(l).expect("hex"))).collect()
    }

    #[test]
    fn the_reference_tree_has_the_published_roots_and_proofs() {
        let leaves = ct_leaves();
        for (n, want) in CT_ROOTS.iter().enumerate() {
            assert_eq!(root(&leaves[..n]), h(want), "size {n}");
        }
        let inclusion = [
            (
                0u64,
                vec![
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                vec![
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (index, want) in inclusion {
            let want: Vec<Hash> = want.into_iter().map(h).collect();
            assert_eq!(inclusion_proof(&leaves, index).expect("in range"), want, "index {index}");
            let i = usize::try_from(index).expect("small");
            verify_inclusion(&leaves[i], index, 8, &want, &h(CT_ROOTS[8])).expect("verifies");
        }
        let consistency = [
            (
                2u64,
                8usize,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
            (
                6,
                8,
                vec![
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ];
        for (m, n, want) in consistency {
            let want: Vec<Hash> = want.into_iter().map(h).collect();
            assert_eq!(consistency_proof(&leaves[..n], m).expect("in range"), want, "{m} -> {n}");
            let first = usize::try_from(m).expect("small");
            verify_consistency(m, n as u64, &want, &h(CT_ROOTS[first]), &h(CT_ROOTS[n])).expect("verifies");
        }
    }

    /// Leaves that differ in every tree: the hash of their index.
    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    /// Every leaf of every tree of up to 300 leaves has an inclusion proof that verifies; none
    /// verifies for another index, another size, another leaf or another root.
    #[test]
    fn inclusion_proofs_verify_for_every_size_up_to_300_and_nothing_else_does() {
        let all = leaves(301);
        for n in 1..=300usize {
            let tree = &all[..n];
            let r = root(tree);
            let size = n as u64;
            for i in 0..n {
                let index = i as u64;
                let proof = inclusion_proof(tree, index).expect("in range");
                verify_inclusion(&tree[i], index, size, &proof, &r).expect("verifies");
                if n % 37 != 1 && i % 7 != 0 {
                    continue; // the refusals below on a spread of sizes and indices
                }
                assert!(verify_inclusion(&tree[i], index, size, &proof, &all[n]).is_err(), "other root");
                assert!(verify_inclusion(&all[n], index, size, &proof, &r).is_err(), "other leaf");
                // The root of another size (a proof alone does not fix the size: the checkpoint
                // signs size and root together).
                let next = root(&all[..=n]);
                assert!(verify_inclusion(&tree[i], index, size + 1, &proof, &next).is_err(), "other size");
                if n > 1 {
                    let other = (index + 1) % size;
                    assert!(verify_inclusion(&tree[i], other, size, &proof, &r).is_err(), "other index");
                }
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][31] ^= 1;
                    assert!(verify_inclusion(&tree[i], index, size, &bad, &r).is_err(), "flipped {k}");
                }
                let mut longer = proof.clone();
                longer.push(r);
                assert_eq!(
                    verify_inclusion(&tree[i], index, size, &longer, &r),
                    Err(ProofError::WrongLength)
                );
                if !proof.is_empty() {
                    let shorter = &proof[..proof.len() - 1];
                    assert!(verify_inclusion(&tree[i], index, size, shorter, &r).is_err(), "shorter");
                }
            }
            assert_eq!(inclusion_proof(tree, size), None);
            assert_eq!(verify_inclusion(&tree[0], size, size, &[], &r), Err(ProofError::OutOfRange));
        }
    }

    /// Every prefix of every tree of up to 300 leaves has a consistency proof that verifies; a
    /// history rewritten anywhere in the prefix, or a changed proof, does not.
    #[test]
    fn consistency_proofs_verify_for_every_size_up_to_300_and_rewritten_history_does_not() {
        let all = leaves(300);
        let roots: Vec<Hash> = (0..=300).map(|n| root(&all[..n])).collect();
        for n in 1..=300usize {
            let tree = &all[..n];
            for m in 0..=n {
                let proof = consistency_proof(tree, m as u64).expect("in range");
                verify_consistency(m as u64, n as u64, &proof, &roots[m], &roots[n]).expect("verifies");
                if m == 0 || (n % 23 != 1 && m % 11 != 3) {
                    continue;
                }
                // The log rewrote leaf m-1 after the first checkpoint: the old root is not a
                // prefix of the new tree.
                let mut rewritten = tree.to_vec();
                rewritten[m - 1][0] ^= 1;
                let forged = consistency_proof(&rewritten, m as u64).expect("in range");
                let new_root = root(&rewritten);
                assert!(verify_consistency(m as u64, n as u64, &forged, &roots[m], &new_root).is_err());
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    bad[k][0] ^= 0x80;
                    assert!(verify_consistency(m as u64, n as u64, &bad, &roots[m], &roots[n]).is_err());
                }
                if m < n {
                    assert!(verify_consistency(m as u64, n as u64, &[], &roots[m], &roots[n]).is_err());
                    let mut longer = proof.clone();
                    longer.push(roots[n]);
                    assert!(verify_consistency(m as u64, n as u64, &longer, &roots[m], &roots[n]).is_err());
                }
            }
            assert_eq!(consistency_proof(tree, n as u64 + 1), None);
            assert_eq!(
                verify_consistency(n as u64 + 1, n as u64, &[], &roots[n], &roots[n]),
                Err(ProofError::OutOfRange)
            );
        }
    }

    /// Perfect-subtree hashes kept as a log appends: after leaf `m`, every perfect subtree that
    /// ends at `m + 1`.
    #[derive(Default)]
    struct Stored(std::collections::BTreeMap<(u64, u64), Hash>);

    impl Stored {
        fn append(&mut self, m: u64, leaf: Hash) {
            self.0.insert((m, 1), leaf);
            let mut size = 1;
            while (m + 1) % (size * 2) == 0 {
                let start = m + 1 - size * 2;
                let left = self.0[&(start, size)];
                let right = self.0[&(start + size, size)];
                self.0.insert((start, size * 2), node_hash(&left, &right));
                size *= 2;
            }
        }
    }

    impl Subtrees for Stored {
        type Error = ();
        fn perfect(&self, start: u64, size: u64) -> Result<Hash, ()> {
            self.0.get(&(start, size)).copied().ok_or(())
        }
    }

    #[test]
    fn proofs_from_stored_perfect_subtrees_are_the_rfc_proofs() {
        let all = leaves(140);
        let mut stored = Stored::default();
        for (m, leaf) in all.iter().enumerate() {
            stored.append(m as u64, *leaf);
            let n = m + 1;
            let tree = &all[..n];
            assert_eq!(stored.range(0, n as u64), Ok(root(tree)), "size {n}");
            for i in 0..n as u64 {
                assert_eq!(
                    inclusion_proof_in(&stored, n as u64, i),
                    Ok(inclusion_proof(tree, i)),
                    "{i} of {n}"
                );
            }
            for first in 0..=n as u64 {
                assert_eq!(
                    consistency_proof_in(&stored, first, n as u64),
                    Ok(consistency_proof(tree, first)),
                    "{first} to {n}"
                );
            }
            assert_eq!(inclusion_proof_in(&stored, n as u64, n as u64), Ok(None));
            assert_eq!(consistency_proof_in(&stored, n as u64 + 1, n as u64), Ok(None));
        }
    }
}
