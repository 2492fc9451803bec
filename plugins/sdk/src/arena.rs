//! The bump arena in front of the adapter's heap (`alloc.rs`): addresses only, so that its
//! arithmetic is tested natively.
//!
//! An adapter runs in a fresh instance per call, so memory it frees is worth little: the
//! instance goes away with the call. Handing out the initial memory's free tail by bumping
//! a pointer costs a few instructions where dlmalloc's bins and boundary tags cost about a
//! hundred, and it touches memory in order. Two frees are still worth taking: of the last
//! block (a temporary), and the growth of the last block in place (a `Vec` or `String`
//! being built). What does not fit goes to dlmalloc, on pages grown past the tail.

use core::cell::Cell;

pub struct Arena {
    /// Where the next block may start.
    next: Cell<usize>,
    /// One past the arena's last byte (0 until [`Arena::init`]).
    end: Cell<usize>,
    /// The arena's first byte.
    base: Cell<usize>,
    /// Nothing at or past this has been handed out: it still holds the image's zeros.
    untouched: Cell<usize>,
}

impl Arena {
    pub const fn new() -> Arena {
        Arena { next: Cell::new(0), end: Cell::new(0), base: Cell::new(0), untouched: Cell::new(0) }
    }

    /// `[base, end)`, which must hold zeros, becomes the arena. Once.
    pub fn init(&self, base: usize, end: usize) {
        let base = base.min(end);
        self.base.set(base);
        self.next.set(base);
        self.untouched.set(base);
        self.end.set(end);
    }

    pub fn is_init(&self) -> bool {
        self.end.get() != 0
    }

    pub fn contains(&self, ptr: usize) -> bool {
        (self.base.get()..self.end.get()).contains(&ptr)
    }

    /// A block of `size` bytes aligned to `align` (a power of two), if the arena has room.
    pub fn alloc(&self, size: usize, align: usize) -> Option<usize> {
        let start = self.next.get().checked_next_multiple_of(align)?;
        let stop = start.checked_add(size)?;
        if stop > self.end.get() {
            return None;
        }
        self.next.set(stop);
        Some(start)
    }

    /// The same, zeroed: the caller clears the returned range's first `dirty` bytes, the only
    /// ones that may have been handed out and freed before.
    pub fn alloc_zeroed(&self, size: usize, align: usize) -> Option<(usize, usize)> {
        let untouched = self.untouched.get();
        let start = self.alloc(size, align)?;
        self.untouched.set(untouched.max(start + size));
        Some((start, untouched.saturating_sub(start).min(size)))
    }

    /// Frees a block: its bytes come back only if it is the last one handed out.
    pub fn free(&self, ptr: usize, size: usize) {
        self.note_touched();
        if ptr.checked_add(size) == Some(self.next.get()) {
            self.next.set(ptr);
        }
    }

    /// Resizes a block in place if it is the last one and the arena has room, or if it
    /// shrinks; `false` if it must move.
    pub fn resize_in_place(&self, ptr: usize, old: usize, new: usize) -> bool {
        self.note_touched();
        let last = ptr.checked_add(old) == Some(self.next.get());
        match ptr.checked_add(new) {
            Some(stop) if last && stop <= self.end.get() => {
                self.next.set(stop);
                true
            }
            _ => new <= old,
        }
    }

    /// Before `next` moves down, what lies below it has been handed out.
    fn note_touched(&self) {
        self.untouched.set(self.untouched.get().max(self.next.get()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arena() -> Arena {
        let a = Arena::new();
        a.init(1000, 2000);
        a
    }

    #[test]
    fn blocks_are_aligned_and_do_not_overlap() {
        assert!(!Arena::new().is_init());
        let a = arena();
        assert!(a.is_init() && a.contains(1000) && a.contains(1999) && !a.contains(999) && !a.contains(2000));
        assert_eq!(a.alloc(10, 8), Some(1000));
        assert_eq!(a.alloc(1, 1), Some(1010));
        assert_eq!(a.alloc(4, 16), Some(1024));
        assert_eq!(a.alloc(8, 8), Some(1032));
    }

    #[test]
    fn what_does_not_fit_is_refused_and_the_arena_stays_usable() {
        let a = arena();
        assert_eq!(a.alloc(900, 1), Some(1000));
        assert_eq!(a.alloc(200, 1), None);
        assert_eq!(a.alloc(usize::MAX, 1), None);
        assert_eq!(a.alloc(100, 1), Some(1900));
        assert_eq!(a.alloc(1, 1), None);
    }

    #[test]
    fn the_last_block_is_freed_and_grown_in_place_the_others_are_not() {
        let a = arena();
        let x = a.alloc(100, 1).unwrap();
        let y = a.alloc(100, 1).unwrap();
        a.free(x, 100); // not the last: its bytes stay taken
        assert_eq!(a.alloc(10, 1), Some(1200));
        a.free(1200, 10);
        assert!(a.resize_in_place(y, 100, 300), "the last block grows in place");
        assert_eq!(a.alloc(1, 1), Some(1400));
        assert!(!a.resize_in_place(y, 300, 400), "a block that is not the last must move");
        assert!(a.resize_in_place(y, 300, 50), "any block shrinks in place");
        assert!(!a.resize_in_place(1400, 1, 700), "past the end it must move");
    }

    #[test]
    fn zeroed_blocks_are_cleared_only_where_memory_was_handed_out_before() {
        let a = arena();
        assert_eq!(a.alloc_zeroed(100, 1), Some((1000, 0)), "fresh memory is the image's zeros");
        a.free(1000, 100);
        assert_eq!(a.alloc_zeroed(150, 1), Some((1000, 100)), "the freed block's bytes may be dirty");
        let (p, size) = (a.alloc(10, 1).unwrap(), 10);
        assert!(a.resize_in_place(p, size, 60));
        a.free(p, 60);
        assert_eq!(a.alloc_zeroed(100, 1), Some((1150, 60)), "grown in place, then freed: dirty too");
    }
}
