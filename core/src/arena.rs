//! Caller-provided memory: carve aligned typed buffers out of one `&mut [u8]`.
//!
//! Goldcrest never allocates. A model first reports its [`MemoryPlan`] (exact bytes of state and
//! scratch for its config); the caller provides buffers of that size (a `static`, a stack array,
//! a region in external RAM, or a `Vec` on a hosted target), and the model carves them with an
//! [`Arena`].
//!
//! Planning and carving share one code path: a model writes its layout once, generic over
//! [`Carve`], and runs it with a [`Planner`] (which only counts) to size the buffer and with an
//! [`Arena`] (which hands out slices) to use it. The plan is therefore exact by construction.
//!
//! Every buffer starts on an [`ARENA_ALIGN`]-byte boundary (a cache line, and enough for any
//! SIMD load). [`Arena::new`] requires the caller's buffer to start on that boundary; use
//! [`Aligned`] for statics, or [`Arena::new_unaligned`] with [`MemoryPlan::bytes_unaligned`].

use crate::error::{Error, Result};
use bytemuck::Pod;

/// Alignment of every buffer an [`Arena`] hands out, and of the arena's start.
pub const ARENA_ALIGN: usize = 64;

/// A byte array aligned to [`ARENA_ALIGN`], for `static` arenas in firmware:
///
/// ```
/// use goldcrest_core::arena::{Aligned, Arena, Carve};
/// let mut buf = Aligned([0u8; 4096]);
/// let mut arena = Arena::new(&mut buf.0).unwrap();
/// let xs: &mut [f32] = arena.take(100).unwrap();
/// assert_eq!(xs.len(), 100);
/// ```
#[repr(C, align(64))]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// Something buffers can be carved from: an [`Arena`] (real memory) or a [`Planner`] (counting).
pub trait Carve {
    /// What a request returns: a slice for an arena, nothing for a planner.
    type Out<T: Pod>;
    /// Requests `n` zeroed elements of `T`, aligned to [`ARENA_ALIGN`].
    fn take<T: Pod>(&mut self, n: usize) -> Result<Self::Out<T>>;
}

fn round_up(x: usize) -> Option<usize> {
    x.checked_add(ARENA_ALIGN - 1)
        .map(|v| v & !(ARENA_ALIGN - 1))
}

/// Counts the bytes a sequence of [`Carve::take`] calls needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planner {
    bytes: usize,
}

impl Planner {
    /// An empty plan.
    pub const fn new() -> Self {
        Planner { bytes: 0 }
    }

    /// Bytes needed so far, for a buffer that starts on an [`ARENA_ALIGN`] boundary.
    pub const fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Carve for Planner {
    type Out<T: Pod> = ();
    fn take<T: Pod>(&mut self, n: usize) -> Result<()> {
        let size = n
            .checked_mul(core::mem::size_of::<T>())
            .and_then(|s| round_up(self.bytes)?.checked_add(s))
            .ok_or(Error::OutOfRange)?;
        self.bytes = size;
        Ok(())
    }
}

/// Hands out aligned, zeroed typed slices from a caller's byte buffer, front to back.
#[derive(Debug)]
pub struct Arena<'a> {
    rest: &'a mut [u8],
    used: usize,
}

impl<'a> Arena<'a> {
    /// An arena over `buf`, which must start on an [`ARENA_ALIGN`] boundary.
    pub fn new(buf: &'a mut [u8]) -> Result<Self> {
        if !(buf.as_ptr() as usize).is_multiple_of(ARENA_ALIGN) {
            return Err(Error::BufferMisaligned {
                required: ARENA_ALIGN as u16,
            });
        }
        Ok(Arena { rest: buf, used: 0 })
    }

    /// An arena over `buf` at any address: skips up to `ARENA_ALIGN - 1` leading bytes, so size
    /// the buffer with [`MemoryPlan::bytes_unaligned`].
    pub fn new_unaligned(buf: &'a mut [u8]) -> Self {
        let skip = buf.as_ptr().align_offset(ARENA_ALIGN).min(buf.len());
        let (_, rest) = buf.split_at_mut(skip);
        Arena { rest, used: 0 }
    }

    /// Bytes handed out so far, including alignment padding.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Bytes still available (before alignment of the next request).
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

impl<'a> Carve for Arena<'a> {
    type Out<T: Pod> = &'a mut [T];
    fn take<T: Pod>(&mut self, n: usize) -> Result<&'a mut [T]> {
        let pad = round_up(self.used).ok_or(Error::OutOfRange)? - self.used;
        let size = n
            .checked_mul(core::mem::size_of::<T>())
            .ok_or(Error::OutOfRange)?;
        let total = pad.checked_add(size).ok_or(Error::OutOfRange)?;
        if total > self.rest.len() {
            return Err(Error::BufferTooSmall {
                needed: (self.used + total) as u64,
                provided: (self.used + self.rest.len()) as u64,
            });
        }
        let rest = core::mem::take(&mut self.rest);
        let (head, tail) = rest.split_at_mut(total);
        self.rest = tail;
        self.used += total;
        let bytes = &mut head[pad..];
        bytes.fill(0);
        // The arena's start is aligned to ARENA_ALIGN and `pad` restores that alignment, which
        // is at least that of any Pod scalar goldcrest uses, so this cast cannot fail.
        bytemuck::try_cast_slice_mut(bytes).map_err(|_| Error::BufferMisaligned {
            required: core::mem::align_of::<T>() as u16,
        })
    }
}

/// What a model needs besides its (zero-copy) weights, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of weights the model reads in place (flash, mmap); never copied.
    pub weight_bytes: usize,
    /// Bytes of persistent state (recurrent state, KV cache) that live across calls.
    pub state_bytes: usize,
    /// Bytes of scratch reused by every call.
    pub scratch_bytes: usize,
}

impl MemoryPlan {
    /// State plus scratch: the caller-provided RAM, for buffers starting on [`ARENA_ALIGN`].
    pub fn ram_bytes(&self) -> usize {
        self.state_bytes + self.scratch_bytes
    }

    /// RAM needed when the state and scratch buffers may start at any address.
    pub fn bytes_unaligned(&self) -> usize {
        self.state_bytes + self.scratch_bytes + 2 * (ARENA_ALIGN - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Layout<C> = (
        <C as Carve>::Out<f32>,
        <C as Carve>::Out<u8>,
        <C as Carve>::Out<i16>,
    );

    fn layout<C: Carve>(c: &mut C) -> Result<Layout<C>> {
        Ok((c.take::<f32>(10)?, c.take::<u8>(3)?, c.take::<i16>(7)?))
    }

    #[test]
    fn plan_is_exact() {
        let mut p = Planner::new();
        layout(&mut p).unwrap();
        assert_eq!(p.bytes(), 64 + 64 + 14);
        let mut buf = Aligned([0xAAu8; 142]);
        let mut a = Arena::new(&mut buf.0).unwrap();
        let (x, y, z) = layout(&mut a).unwrap();
        assert_eq!((x.len(), y.len(), z.len()), (10, 3, 7));
        assert!(x.iter().all(|&v| v == 0.0));
        assert_eq!(a.remaining(), 0);
        assert_eq!(x.as_ptr() as usize % ARENA_ALIGN, 0);
        assert_eq!(z.as_ptr() as usize % ARENA_ALIGN, 0);
    }

    #[test]
    fn too_small_is_an_error() {
        let mut buf = Aligned([0u8; 141]);
        let mut a = Arena::new(&mut buf.0).unwrap();
        assert!(matches!(
            layout(&mut a),
            Err(Error::BufferTooSmall {
                needed: 142,
                provided: 141
            })
        ));
    }

    #[test]
    fn misaligned_start_is_an_error_or_skipped() {
        let mut buf = Aligned([0u8; 256]);
        assert!(Arena::new(&mut buf.0[1..]).is_err());
        let mut a = Arena::new_unaligned(&mut buf.0[1..]);
        let x: &mut [u32] = a.take(4).unwrap();
        assert_eq!(x.as_ptr() as usize % ARENA_ALIGN, 0);
    }
}
