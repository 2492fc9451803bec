//! The adapter's heap, inside the memory it starts with.
//!
//! Rust's own wasm allocator takes every byte of heap from `memory.grow`, so the room left
//! in the initial memory past the data segments goes unused and every call grows the memory
//! by at least a page. The host resets the initial memory of a pooled instance by hand and
//! gives grown pages back to the kernel, so a grown page costs each call page faults and a
//! memory-protection change (TLB-shootdown IPIs under load). This allocator is the same
//! dlmalloc, whose first region is that unused room: a call whose heap fits in it never
//! grows the memory.
//!
//! Enabled by the default `allocator` feature, on `wasm32-unknown-unknown` only: on
//! `wasm32-wasip2` the heap is wasi-libc's malloc, which libc itself also calls, so a second
//! allocator could claim the same room. An adapter that brings its own `#[global_allocator]`
//! turns the feature off.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::{Cell, UnsafeCell};
use core::ptr;

const PAGE: usize = 64 << 10;

extern "C" {
    // Set by wasm-ld: the first byte past the data segments (and past the stack, which
    // `xtask` lays out first).
    static __heap_base: u8;
}

/// Where heap memory comes from: first the initial memory's free tail, then new pages.
struct Pages {
    tail_taken: Cell<bool>,
}

unsafe impl dlmalloc::Allocator for Pages {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let mut start = wasm32::memory_size(0) * PAGE;
        let mut have = 0;
        if !self.tail_taken.replace(true) {
            // The tail is zero: nothing is placed past `__heap_base`, and the memory of a
            // fresh instance is its image. dlmalloc merges the pages grown below with it.
            let base = (ptr::addr_of!(__heap_base) as usize).next_multiple_of(16);
            if base < start {
                have = start - base;
                start = base;
            }
        }
        let pages = size.saturating_sub(have).div_ceil(PAGE);
        if pages > 0 && wasm32::memory_grow(0, pages) == usize::MAX {
            // Out of memory (the host's cap); the tail stays for a smaller request.
            if have > 0 {
                self.tail_taken.set(false);
            }
            return (ptr::null_mut(), 0, 0);
        }
        (start as *mut u8, have + pages * PAGE, 0)
    }

    fn remap(&self, _ptr: *mut u8, _old: usize, _new: usize, _can_move: bool) -> *mut u8 {
        ptr::null_mut()
    }

    fn free_part(&self, _ptr: *mut u8, _old: usize, _new: usize) -> bool {
        false
    }

    fn free(&self, _ptr: *mut u8, _size: usize) -> bool {
        false
    }

    fn can_release_part(&self, _flags: u32) -> bool {
        false
    }

    fn allocates_zeros(&self) -> bool {
        true
    }

    fn page_size(&self) -> usize {
        PAGE
    }
}

struct Heap(UnsafeCell<dlmalloc::Dlmalloc<Pages>>);

// Adapters are single-threaded wasm (no `atomics` target feature): nothing is shared.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap(UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(Pages { tail_taken: Cell::new(false) })));

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).malloc(layout.size(), layout.align()) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { (*self.0.get()).calloc(layout.size(), layout.align()) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { (*self.0.get()).free(ptr, layout.size(), layout.align()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        unsafe { (*self.0.get()).realloc(ptr, layout.size(), layout.align(), new_size) }
    }
}
