//! Verified streaming for blobs named by their blake3 hash.
//!
//! BLAKE3 is a tree hash: a blob's name is the root of a binary tree whose
//! leaves are 1 KiB chunks. Cut the blob into aligned [`GROUP`]-sized groups
//! (1 MiB, 1,024 chunks: every group is a complete subtree) and keep the
//! chaining value of each group: that list is the blob's *outboard* (32 bytes
//! per MiB, 0.003 % of the blob). The outboard is checked against the name
//! once, by merging the chaining values up the tree ([`Outboard::new`]); after
//! that each group is verified on its own by hashing just its bytes
//! ([`Outboard::verify_group`]). So
//!
//! - a push or a fetch is verified group by group as it arrives, and a broken
//!   transfer keeps every group that arrived intact (resume sends only what
//!   is missing, in any order);
//! - a corrupt cached file is found and repaired one group at a time.
//!
//! The outboard needs no trust: a list that does not merge to the blob's
//! name is refused. This is Bao's construction with 1 MiB groups, built on
//! the `blake3` crate's `hazmat` tree API; the tests check it against
//! `blake3::hash` over every tree shape up to 17 groups.

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

/// Bytes per verified group (1 MiB; a power of two multiple of the 1 KiB
/// BLAKE3 chunk, so each group is one subtree of the hash tree).
pub const GROUP: u64 = 1 << 20;
/// Bytes of one chaining value in an outboard.
pub const CV_LEN: usize = 32;

/// An outboard that does not describe the blob, or data that does not match it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboardError {
    /// Wrong number of bytes for the blob's size.
    #[error(
        "outboard of {got} bytes, but a {size}-byte blob needs {want} ({groups} groups of 1 MiB)"
    )]
    Length {
        /// Blob size.
        size: u64,
        /// Groups.
        groups: u64,
        /// Expected bytes.
        want: u64,
        /// Bytes given.
        got: u64,
    },
    /// The chaining values do not merge to the blob's name.
    #[error(
        "outboard does not match the blob's blake3 name (its chaining values merge to {actual})"
    )]
    Root {
        /// What they merge to (hex).
        actual: String,
    },
    /// A group's bytes do not hash to its chaining value.
    #[error("bytes {offset}..{end} (group {index}) do not match the blob's hash tree")]
    Group {
        /// Group index.
        index: u64,
        /// First byte.
        offset: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The bytes streamed were not the blob's declared size.
    #[error("blob declared {declared} bytes but {seen} arrived")]
    Size {
        /// Declared size.
        declared: u64,
        /// Bytes fed.
        seen: u64,
    },
    /// Data for a group has the wrong length, or the group is out of range.
    #[error("group {index} of a {size}-byte blob is {want} bytes, got {got}")]
    GroupLength {
        /// Group index.
        index: u64,
        /// Blob size.
        size: u64,
        /// Its length.
        want: u64,
        /// Bytes given.
        got: u64,
    },
}

/// Number of groups of a blob (an empty blob has one, empty, group).
pub fn groups(size: u64) -> u64 {
    size.div_ceil(GROUP).max(1)
}

/// Byte range `(offset, len)` of group `index` of a `size`-byte blob, or
/// `None` past the end.
pub fn group_range(size: u64, index: u64) -> Option<(u64, u64)> {
    if index >= groups(size) {
        return None;
    }
    let offset = index * GROUP;
    Some((offset, (size - offset).min(GROUP)))
}

/// The chaining value of one group of a multi-group blob.
fn group_cv(index: u64, data: &[u8]) -> ChainingValue {
    blake3::Hasher::new()
        .set_input_offset(index * GROUP)
        .update(data)
        .finalize_non_root()
}

/// The chaining values of a blob's groups, checked against its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboard {
    size: u64,
    /// One per group. A single-group blob keeps its root hash here.
    cvs: Vec<ChainingValue>,
}

/// Merge the chaining values covering `len` bytes from `offset` (the tree
/// below one node); `root` for the top node.
fn merge(cvs: &[ChainingValue], offset: u64, len: u64, root: bool) -> ChainingValue {
    if len <= GROUP {
        let i = usize::try_from(offset / GROUP).unwrap_or(usize::MAX);
        return cvs.get(i).copied().unwrap_or([0; CV_LEN]);
    }
    // Larger than a group, so the left subtree is a power-of-two number of
    // chunks ≥ 1,024: a whole number of groups.
    let left = left_subtree_len(len);
    let l = merge(cvs, offset, left, false);
    let r = merge(cvs, offset + left, len - left, false);
    if root {
        *merge_subtrees_root(&l, &r, Mode::Hash).as_bytes()
    } else {
        merge_subtrees_non_root(&l, &r, Mode::Hash)
    }
}

impl Outboard {
    /// An outboard received for a blob named `root` of `size` bytes: refused
    /// unless it has the right length and merges to `root`.
    pub fn new(size: u64, bytes: &[u8], root: &[u8; 32]) -> Result<Self, OutboardError> {
        let groups = groups(size);
        let want = groups * CV_LEN as u64;
        if bytes.len() as u64 != want {
            return Err(OutboardError::Length {
                size,
                groups,
                want,
                got: bytes.len() as u64,
            });
        }
        let cvs: Vec<ChainingValue> = bytes
            .chunks_exact(CV_LEN)
            .map(|c| {
                let mut cv = [0u8; CV_LEN];
                cv.copy_from_slice(c);
                cv
            })
            .collect();
        let ob = Outboard { size, cvs };
        let actual = ob.root();
        if actual != *root {
            return Err(OutboardError::Root {
                actual: blake3::Hash::from(actual).to_hex().to_string(),
            });
        }
        Ok(ob)
    }

    /// The outboard of a whole blob in memory.
    pub fn compute(data: &[u8]) -> Self {
        let mut b = OutboardBuilder::new(data.len() as u64);
        b.update(data);
        // Exactly the declared size was fed.
        b.finish().unwrap_or(Outboard {
            size: 0,
            cvs: Vec::new(),
        })
    }

    /// The blob's size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of groups.
    pub fn groups(&self) -> u64 {
        self.cvs.len() as u64
    }

    /// The blob's blake3 hash, as the chaining values give it.
    pub fn root(&self) -> [u8; 32] {
        if self.cvs.len() <= 1 {
            return self.cvs.first().copied().unwrap_or([0; CV_LEN]);
        }
        merge(&self.cvs, 0, self.size, true)
    }

    /// The wire and disk form: the chaining values, concatenated.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.cvs.concat()
    }

    /// Check one group's bytes.
    pub fn verify_group(&self, index: u64, data: &[u8]) -> Result<(), OutboardError> {
        let Some((offset, len)) = group_range(self.size, index) else {
            return Err(OutboardError::GroupLength {
                index,
                size: self.size,
                want: 0,
                got: data.len() as u64,
            });
        };
        if data.len() as u64 != len {
            return Err(OutboardError::GroupLength {
                index,
                size: self.size,
                want: len,
                got: data.len() as u64,
            });
        }
        let actual = if self.cvs.len() == 1 {
            *blake3::hash(data).as_bytes()
        } else {
            group_cv(index, data)
        };
        let want = usize::try_from(index)
            .ok()
            .and_then(|i| self.cvs.get(i))
            .copied();
        if want == Some(actual) {
            Ok(())
        } else {
            Err(OutboardError::Group {
                index,
                offset,
                end: offset + len,
            })
        }
    }

    /// Every group of `data` that does not verify (empty when all do).
    /// `data` must be the whole blob's length; a short one fails its tail.
    pub fn bad_groups(&self, data: &[u8]) -> Vec<u64> {
        (0..self.groups())
            .filter(|&i| {
                let Some((off, len)) = group_range(self.size, i) else {
                    return true;
                };
                let piece = usize::try_from(off)
                    .ok()
                    .zip(usize::try_from(off + len).ok())
                    .and_then(|(a, b)| data.get(a..b));
                piece.is_none_or(|p| self.verify_group(i, p).is_err())
            })
            .collect()
    }
}

/// Builds an outboard from a blob's bytes streamed in order, in pieces of
/// any size.
#[derive(Debug, Clone)]
pub struct OutboardBuilder {
    size: u64,
    seen: u64,
    group: blake3::Hasher,
    cvs: Vec<ChainingValue>,
}

impl OutboardBuilder {
    /// For a blob of `size` bytes.
    pub fn new(size: u64) -> Self {
        OutboardBuilder {
            size,
            seen: 0,
            group: blake3::Hasher::new(),
            cvs: Vec::new(),
        }
    }

    /// Bytes seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    fn close_group(&mut self) {
        let index = self.cvs.len() as u64;
        self.cvs.push(self.group.finalize_non_root());
        self.group = blake3::Hasher::new();
        self.group.set_input_offset((index + 1) * GROUP);
    }

    /// Feed the next bytes. Bytes past the declared size are counted, not
    /// hashed ([`OutboardBuilder::finish`] then refuses).
    pub fn update(&mut self, data: &[u8]) {
        let multi = groups(self.size) > 1;
        let allowed = usize::try_from(self.size.saturating_sub(self.seen)).unwrap_or(usize::MAX);
        let (mut data, extra) = data.split_at(allowed.min(data.len()));
        while !data.is_empty() {
            let in_group = self.seen % GROUP;
            let room = usize::try_from(GROUP - in_group).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            let (now, rest) = data.split_at(take);
            self.group.update(now);
            self.seen += take as u64;
            data = rest;
            if multi && self.seen.is_multiple_of(GROUP) && self.seen < self.size {
                self.close_group();
            }
        }
        self.seen += extra.len() as u64;
    }

    /// The outboard of the bytes fed, refused unless exactly the declared
    /// size arrived. Check its [`Outboard::root`] against the blob's name.
    pub fn finish(self) -> Result<Outboard, OutboardError> {
        if self.seen != self.size {
            return Err(OutboardError::Size {
                declared: self.size,
                seen: self.seen,
            });
        }
        let mut cvs = self.cvs;
        if groups(self.size) > 1 {
            cvs.push(self.group.finalize_non_root());
        } else {
            cvs = vec![*self.group.finalize().as_bytes()];
        }
        Ok(Outboard {
            size: self.size,
            cvs,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| {
                (i as u64)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed as u64) as u8
            })
            .collect()
    }

    const G: usize = GROUP as usize;

    #[test]
    fn merges_to_blake3_for_every_tree_shape() {
        let mut sizes = vec![0, 1, 1023, 1024, 1025, G - 1, G, G + 1, G + 1024];
        for groups in 2..=17 {
            sizes.push(groups * G);
            sizes.push(groups * G - 1);
            sizes.push((groups - 1) * G + 1);
            sizes.push((groups - 1) * G + 1024);
            sizes.push((groups - 1) * G + 1025);
        }
        for size in sizes {
            let d = data(size, size as u8);
            let ob = Outboard::compute(&d);
            let name = *blake3::hash(&d).as_bytes();
            assert_eq!(ob.root(), name, "size {size}");
            assert_eq!(ob.groups(), groups(size as u64));
            let back = Outboard::new(size as u64, &ob.to_bytes(), &name).unwrap();
            assert_eq!(back, ob);
            assert!(ob.bad_groups(&d).is_empty(), "size {size}");
        }
    }

    #[test]
    fn a_flipped_bit_names_its_group() {
        let mut d = data(5 * G + 77, 3);
        let ob = Outboard::compute(&d);
        d[3 * G + 10] ^= 0x10;
        assert_eq!(ob.bad_groups(&d), vec![3]);
        assert!(matches!(
            ob.verify_group(3, &d[3 * G..4 * G]),
            Err(OutboardError::Group { index: 3, .. })
        ));
        ob.verify_group(4, &d[4 * G..5 * G]).unwrap();
        ob.verify_group(5, &d[5 * G..]).unwrap();
        assert!(matches!(
            ob.verify_group(5, &d[5 * G..5 * G + 10]),
            Err(OutboardError::GroupLength { .. })
        ));
        assert!(ob.verify_group(6, &[]).is_err());
    }

    #[test]
    fn a_wrong_size_stream_is_refused() {
        let d = data(2 * G + 5, 4);
        let mut b = OutboardBuilder::new(2 * GROUP);
        b.update(&d);
        assert!(
            matches!(b.finish(), Err(OutboardError::Size { seen, .. }) if seen == 2 * GROUP + 5)
        );
        let mut b = OutboardBuilder::new(2 * GROUP + 6);
        b.update(&d);
        assert!(b.finish().is_err());
    }

    #[test]
    fn a_lying_outboard_is_refused() {
        let d = data(3 * G, 1);
        let name = *blake3::hash(&d).as_bytes();
        let mut bytes = Outboard::compute(&d).to_bytes();
        assert!(matches!(
            Outboard::new(3 * GROUP, &bytes[..64], &name),
            Err(OutboardError::Length { .. })
        ));
        bytes[40] ^= 1;
        assert!(matches!(
            Outboard::new(3 * GROUP, &bytes, &name),
            Err(OutboardError::Root { .. })
        ));
        // The outboard of other data cannot pass for this blob.
        let other = Outboard::compute(&data(3 * G, 2)).to_bytes();
        assert!(Outboard::new(3 * GROUP, &other, &name).is_err());
        // Claimed with a shorter size, the same chaining values merge to the
        // same name (the tree's shape is the same), but no data verifies as
        // its last group: a size lie can never complete a blob.
        let good = Outboard::compute(&d).to_bytes();
        let lie = Outboard::new(3 * GROUP - 1, &good, &name).unwrap();
        assert!(lie.verify_group(2, &d[2 * G..3 * G - 1]).is_err());
        assert!(lie.verify_group(2, &d[2 * G..3 * G]).is_err());
        lie.verify_group(1, &d[G..2 * G]).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn streamed_in_any_pieces_equals_whole(size in 0usize..(4 * G + 5000), cuts in proptest::collection::vec(1usize..(G + 3000), 0..12)) {
            let d = data(size, 9);
            let mut b = OutboardBuilder::new(size as u64);
            let mut rest = &d[..];
            for c in cuts {
                let (now, r) = rest.split_at(c.min(rest.len()));
                b.update(now);
                rest = r;
            }
            b.update(rest);
            prop_assert_eq!(b.seen(), size as u64);
            let ob = b.finish().unwrap();
            prop_assert_eq!(ob.root(), *blake3::hash(&d).as_bytes());
            prop_assert_eq!(ob, Outboard::compute(&d));
        }
    }
}
