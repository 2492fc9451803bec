//! The adapter's heap, inside the memory it starts with.
//!
//! Rust's own wasm allocator takes every byte of heap from `memory.grow`, so the room left
//! in the initial memory past the data segments goes unused and every call grows the memory
//! by at least a page. The host resets the initial memory of a pooled instance by hand and
//! gives grown pages back to the kernel, so a grown page costs each call page faults and a
//! memory-protection change (TLB-shootdown IPIs under load). This allocator hands out that
//! unused room first, by bumping a pointer (`arena.rs`: a call's instance is fresh, so
//! freeing is worth little), and what does not fit from dlmalloc on grown pages.
//!
//! Enabled by the default `allocator` feature, on `wasm32-unknown-unknown` only: on
//! `wasm32-wasip2` the heap is wasi-libc's malloc, which libc itself also calls, so a second
//! allocator could claim the same room. An adapter that brings its own `#[global_allocator]`
//! turns the feature off.

use crate::arena::Arena;
use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32;
use core::cell::UnsafeCell;
use core::ptr;

const PAGE: usize = 64 << 10;

extern "C" {
    // Set by wasm-ld: the first byte past the data segments (and past the stack, which
    // `xtask` lays out first).
    static __heap_base: u8;
}

/// Where dlmalloc's memory comes from: pages grown past the arena.
struct Pages;

unsafe impl dlmalloc::Allocator for Pages {
    fn alloc(&self, size: usize) -> (*mut u8, usize, u32) {
        let pages = size.div_ceil(PAGE);
        match wasm32::memory_grow(0, pages) {
            usize::MAX => (ptr::null_mut(), 0, 0), // the host's cap
            old => ((old * PAGE) as *mut u8, pages * PAGE, 0),
        }
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

struct Heap {
    arena: Arena,
    dlmalloc: UnsafeCell<dlmalloc::Dlmalloc<Pages>>,
}

// Adapters are single-threaded wasm (no `atomics` target feature): nothing is shared.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap { arena: Arena::new(), dlmalloc: UnsafeCell::new(dlmalloc::Dlmalloc::new_with_allocator(Pages)) };

impl Heap {
    fn arena(&self) -> &Arena {
        if !self.arena.is_init() {
            // The tail is zero: nothing is placed past `__heap_base`, and the memory of a
            // fresh instance is its image.
            let base = (ptr::addr_of!(__heap_base) as usize).next_multiple_of(16);
            self.arena.init(base, wasm32::memory_size(0) * PAGE);
        }
        &self.arena
    }

    fn dlmalloc(&self) -> &mut dlmalloc::Dlmalloc<Pages> {
        unsafe { &mut *self.dlmalloc.get() }
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.arena().alloc(layout.size(), layout.align()) {
            Some(p) => p as *mut u8,
            None => unsafe { self.dlmalloc().malloc(layout.size(), layout.align()) },
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match self.arena().alloc_zeroed(layout.size(), layout.align()) {
            Some((p, dirty)) => {
                unsafe { ptr::write_bytes(p as *mut u8, 0, dirty) };
                p as *mut u8
            }
            None => unsafe { self.dlmalloc().calloc(layout.size(), layout.align()) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.arena.contains(ptr as usize) {
            self.arena.free(ptr as usize, layout.size());
        } else {
            unsafe { self.dlmalloc().free(ptr, layout.size(), layout.align()) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.arena.contains(ptr as usize) {
            return unsafe { self.dlmalloc().realloc(ptr, layout.size(), layout.align(), new_size) };
        }
        if self.arena.resize_in_place(ptr as usize, layout.size(), new_size) {
            return ptr;
        }
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return ptr::null_mut();
        };
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe { ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            self.arena.free(ptr as usize, layout.size());
        }
        new
    }
}
