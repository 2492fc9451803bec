//! The engine and where guest code runs: engine settings (epoch interruption, fuel when
//! metered, the pooling allocator sized for adapters) and the guest threads.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use super::spin::SPIN;
use wasmtime::{Config, Engine};

/// How often the engine's epoch advances; the CPU deadline's resolution.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(2);

/// One guest thread per CPU.
pub fn default_guest_threads() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}

/// The threads that run guest executions, each with a single-threaded tokio runtime of its
/// own. An execution runs on one of them from start to end, and so does what it starts: its
/// outbound exchange (a task wasmtime-wasi-http spawns) and the keep-alive connections it
/// dials (`outbound/pool.rs` keeps them per guest thread). A call touches the API's thread
/// and one guest thread; on a work-stealing runtime its exchange often woke the other CPU,
/// and a wake-up across CPUs costs tens of microseconds on a VM (BENCHMARKS.md, issue 18).
pub(super) struct GuestPool {
    threads: Vec<GuestThread>,
}

struct GuestThread {
    handle: tokio::runtime::Handle,
    /// Executions placed on this thread and not finished.
    busy: Arc<AtomicUsize>,
    /// Executions ever placed on this thread: whether it ran something since it last
    /// parked idle (`spin.rs`).
    placements: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

thread_local! {
    static GUEST_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which guest thread the caller is (`None` off the guest threads).
pub(crate) fn current_guest_thread() -> Option<usize> {
    GUEST_THREAD.with(Cell::get)
}

/// An execution's place on a guest thread, given back when it ends.
pub(super) struct Placed(Arc<AtomicUsize>);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        SPIN.answered();
    }
}

impl GuestPool {
    pub(super) fn new(threads: usize) -> std::io::Result<Self> {
        let mut pool = GuestPool { threads: Vec::with_capacity(threads) };
        for i in 0..threads {
            let placements = Arc::<AtomicU64>::default();
            let (p, parked_at) = (placements.clone(), AtomicU64::new(0));
            let rt = tokio::runtime::Builder::new_current_thread()
                // A spinning guest yields every epoch tick but is always runnable, and tokio
                // would look at new calls (the injection queue) and at I/O readiness (a CRM's
                // answer) only every 61st turn: 61 ticks, over half a second (BENCHMARKS.md).
                // Look at both at every turn.
                .global_queue_interval(1)
                .event_interval(1)
                .on_thread_park(move || SPIN.before_guest_park(&p, &parked_at))
                .enable_all()
                .build()?;
            let handle = rt.handle().clone();
            keep_a_timer_armed(&handle);
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new().name(format!("crm-guest-{i}")).spawn(move || {
                GUEST_THREAD.with(|g| g.set(Some(i)));
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Its tasks are the host's to abandon.
                rt.shutdown_background();
            })?;
            pool.threads.push(GuestThread { handle, busy: Arc::default(), placements, stop: Some(stop) });
        }
        Ok(pool)
    }

    /// The guest thread with the fewest executions in flight (a spinning guest keeps its
    /// thread busy: new calls go to the others), and the execution's place on it.
    pub(super) fn place(&self) -> (&tokio::runtime::Handle, Placed) {
        let t = self.threads.iter().min_by_key(|t| t.busy.load(Ordering::Relaxed)).expect("at least one guest thread");
        t.busy.fetch_add(1, Ordering::Relaxed);
        t.placements.fetch_add(1, Ordering::Relaxed);
        SPIN.placed();
        (&t.handle, Placed(t.busy.clone()))
    }
}

/// How far ahead a runtime's earliest timer is at most ([`keep_a_timer_armed`]).
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Keeps a timer due within [`HEARTBEAT`] on a runtime. tokio's timer driver wakes its own
/// thread (an eventfd write, then an extra turn of epoll) whenever a timer is set earlier than
/// the earliest it parked with, and a thread that parked idle had none: every call's first
/// timers (its deadline, its outbound request's timeout) did that, twice per call on a guest
/// thread at 1 client. Those timers are seconds away, so with this one due sooner they no
/// longer wake anything; an idle runtime wakes once per [`HEARTBEAT`] instead.
pub(crate) fn keep_a_timer_armed(rt: &tokio::runtime::Handle) {
    rt.spawn(async {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            beat.tick().await;
        }
    });
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        for t in &mut self.threads {
            if let Some(stop) = t.stop.take() {
                let _ = stop.send(());
            }
        }
    }
}

/// How instances get their memories, tables and stacks (`--allocator`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Allocator {
    /// Slots reserved at start-up and reused: an instance costs a few microseconds
    /// (memories are reset copy-on-write, not mapped anew). Bounded by `max_instances`.
    #[default]
    Pooling,
    /// mmap and munmap for every instance (wasmtime's default).
    OnDemand,
}

impl std::str::FromStr for Allocator {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pooling" => Ok(Allocator::Pooling),
            "on-demand" => Ok(Allocator::OnDemand),
            other => Err(format!("unknown allocator '{other}' (pooling, on-demand)")),
        }
    }
}

/// Instances beyond the admitted calls and webhooks the pool has room for: deploy-time
/// `describe` and crmConfig validation run outside admission, and a call's admission ends
/// with its answer, before its slot may be free (`execute::RESETTING_MAX`).
pub(super) const POOL_HEADROOM: u32 = 32 + super::execute::RESETTING_MAX as u32;

/// Bytes of each pooled linear memory reset by hand (zeroed, or copied back from the
/// module's image) rather than given back to the kernel: the bundled adapters' stack (48 KiB)
/// and data (47 KiB), and the first 33 KiB of their heap room, which the SDK's arena hands
/// out from the bottom up. A call that stays inside it costs no page fault, no copy-on-write
/// of the image's pages, no `madvise` and no memory-protection change, so no TLB-shootdown
/// IPI. Every kept byte is rewritten after every call, dirty or not, so this is less than
/// the 192 KiB adapters are linked with (`ADAPTER_MEMORY` in xtask): the rest of their heap
/// room is decommitted in the batch, and a call that writes there (2 of the bundled
/// adapters' 85 conformance tests do) pays a fault per page. 128 KiB instead of 192 cost a
/// Plando lookup 2% less CPU under load; 64 KiB (the stack only) cost 6 page faults and
/// 70 µs more (BENCHMARKS.md).
const KEEP_RESIDENT_MEMORY: usize = 128 << 10;

/// The same for each pooled table and fiber stack: what an adapter's call uses of them (a
/// Plando lookup used less than 16 KiB of its fiber stack: no page fault per call at 16 KiB).
const KEEP_RESIDENT: usize = 32 << 10;

/// Regions to decommit (the part of a memory, table or stack past the kept bytes; an instance
/// has a few) per batch: 16 gave +15% calls/s and −13% CPU per call at 64 clients against 1
/// (BENCHMARKS.md); 32 and 64 gained a few percent more but lengthen the tail of the call
/// that flushes.
const DECOMMIT_BATCH: usize = 16;

/// The pooling allocator sized for adapters: one slot per admitted call (plus headroom),
/// memories up to the largest cap a tenant may be given (the per-call cap itself is the
/// store limiter's), and room for the handful of core instances a component is made of.
pub(super) fn pooling_config(instances: u32) -> wasmtime::PoolingAllocationConfig {
    let mut pool = wasmtime::PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        .total_stacks(instances)
        .max_core_instances_per_component(16)
        .total_core_instances(instances.saturating_mul(16))
        .max_memories_per_component(4)
        .total_memories(instances.saturating_mul(2))
        .max_tables_per_component(16)
        .total_tables(instances.saturating_mul(8))
        .max_memory_size(crate::limits::MAX_MEMORY_BYTES)
        // Resetting a slot by madvise costs page faults on the next call and TLB-shootdown
        // IPIs to every CPU; rewriting what adapters touch by hand is cheaper. Without
        // PAGEMAP_SCAN the whole kept region is rewritten on every reset, dirty or not, so
        // it is sized to what a call touches, no more.
        //
        // `pagemap_scan` (rewrite only the dirty pages, skip the madvise) stays off: in
        // wasmtime 48.0.x the scan asks for present pages only, so a written page that was
        // swapped out is neither rewritten nor decommitted, and the next tenant in the slot
        // would read it (wasmtime PR #14357; not in 48.0.8). It would save part of the
        // ~20 µs of memset and memcpy a call's reset costs under load (BENCHMARKS.md).
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT)
        .async_stack_keep_resident(KEEP_RESIDENT)
        // What is left past the kept region is decommitted in batches: one process_madvise
        // (Linux 6.14+; one madvise per region before), so one TLB-shootdown IPI per batch
        // instead of per instance. A queued slot is not reused before its batch is flushed,
        // and an allocation that finds no free slot flushes the queues first.
        .decommit_batch_size(DECOMMIT_BATCH);
    pool
}

pub(super) fn engine_config(fuel_metering: bool, pool: Option<wasmtime::PoolingAllocationConfig>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true).epoch_interruption(true);
    // Fuel instruments every wasm block: only when the operator asks for budgets.
    config.consume_fuel(fuel_metering);
    if let Some(pool) = pool {
        // A fiber stack holds host frames of the previous call (and its tenant's strings);
        // wasm cannot address it, but a reused stack starts zeroed all the same.
        config.async_stack_zeroing(true).allocation_strategy(pool);
    }
    config
}

/// The engine, and the thread that advances its epoch every [`EPOCH_TICK`] for as long as
/// the engine lives.
pub(super) fn start_engine(fuel_metering: bool, allocator: Allocator, max_instances: u32) -> anyhow::Result<Engine> {
    let pool = (allocator == Allocator::Pooling).then(|| pooling_config(max_instances.saturating_add(POOL_HEADROOM)));
    let engine = Engine::new(&engine_config(fuel_metering, pool))
        .map_err(|e| anyhow::anyhow!("cannot create the wasm engine ({allocator:?} allocator): {e:#}"))?;
    let weak = engine.weak();
    std::thread::Builder::new().name("epoch-ticker".into()).spawn(move || {
        while let Some(engine) = weak.upgrade() {
            engine.increment_epoch();
            drop(engine);
            std::thread::sleep(EPOCH_TICK);
        }
    })?;
    Ok(engine)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile_cache::CompileCache;
    use wasmtime::component::Component;
    use wasmtime::{Instance, Module, Store};

    /// Raw wasm, as an attacker writes it: `mark` grows memory and leaves a marker in the
    /// initial pages (over the module's data image too, which a reset copies back), in grown
    /// pages inside and past the kept region (`KEEP_RESIDENT_MEMORY`), and in a table;
    /// `probe` reports anything of it it sees (after growing the same way, so grown pages are
    /// looked at too).
    const MARKER: &str = r#"(module
        (memory (export "memory") 1 16)
        (data (i32.const 30000) "\01\02\03\04")
        (table 4 funcref)
        (func $marker (result i32) i32.const 0x5ec2e7)
        (elem declare func $marker)
        (func (export "mark")
            (drop (memory.grow (i32.const 7)))
            (i32.store (i32.const 1024) (i32.const 0x5ec2e7))
            (i32.store (i32.const 30000) (i32.const 0x5ec2e7))
            (i32.store (i32.const 100000) (i32.const 0x5ec2e7))
            (i32.store (i32.const 150000) (i32.const 0x5ec2e7))
            (i32.store (i32.const 400000) (i32.const 0x5ec2e7))
            (table.set (i32.const 2) (ref.func $marker)))
        (func (export "probe") (result i32)
            (local $seen i32)
            (local.set $seen (i32.ne (memory.size) (i32.const 1)))
            (drop (memory.grow (i32.const 7)))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 1024))))
            (local.set $seen (i32.or (local.get $seen) (i32.ne (i32.load (i32.const 30000)) (i32.const 0x04030201))))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 100000))))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 150000))))
            (local.set $seen (i32.or (local.get $seen) (i32.load (i32.const 400000))))
            (i32.or (local.get $seen) (i32.eqz (ref.is_null (table.get (i32.const 2)))))))"#;
    // The grown pages it marks lie on both sides of the kept region's end.
    const _: () = assert!(100_000 < KEEP_RESIDENT_MEMORY && KEEP_RESIDENT_MEMORY < 150_000);

    #[tokio::test]
    async fn nothing_survives_in_a_reused_pool_slot() {
        // One slot of each kind, so that B can only get A's.
        let mut one = pooling_config(1);
        one.total_core_instances(1).total_memories(1).total_tables(1);
        let engine = Engine::new(&engine_config(false, Some(one))).expect("engine with a one-slot pool");
        let module = Module::new(&engine, wat::parse_str(MARKER).unwrap()).unwrap();
        let store = || {
            let mut s = Store::new(&engine, ());
            s.set_epoch_deadline(u64::MAX / 2);
            s
        };
        async fn run<R: wasmtime::WasmResults + Send + Sync>(s: &mut Store<()>, i: &Instance, name: &str) -> R {
            i.get_typed_func::<(), R>(&mut *s, name).unwrap().call_async(&mut *s, ()).await.unwrap()
        }

        // Tenant A marks its instance; while it lives, the pool has no other slot.
        let mut a = store();
        let instance = Instance::new_async(&mut a, &module, &[]).await.expect("the slot is free");
        run::<()>(&mut a, &instance, "mark").await;
        assert_ne!(run::<i32>(&mut a, &instance, "probe").await, 0, "the probe sees a marker where there is one");
        let mut other = store();
        let e = Instance::new_async(&mut other, &module, &[]).await.expect_err("a one-slot pool holds one instance");
        assert!(e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some(), "{e:#}");
        drop(other);
        drop(a);

        // Tenant B gets the same slot (the only one), several times over. A's reset beyond the
        // kept region waits in a decommit batch: B's allocation finds no free slot, flushes the
        // batch, and only then gets the slot.
        for _ in 0..3 {
            let mut b = store();
            let instance = Instance::new_async(&mut b, &module, &[]).await.expect("the slot is free again");
            let seen: i32 = run(&mut b, &instance, "probe").await;
            assert_eq!(seen, 0, "tenant B saw tenant A's marker (memory size, memory or table)");
            run::<()>(&mut b, &instance, "mark").await;
        }
    }

    #[test]
    fn the_compile_cache_is_keyed_by_the_engine_settings_that_shape_code() {
        let dir = std::env::temp_dir().join(format!("crm-cc-{}-{:?}", std::process::id(), std::thread::current().id()));
        let plain = Engine::new(&engine_config(false, Some(pooling_config(4)))).unwrap();
        let metered = Engine::new(&engine_config(true, Some(pooling_config(4)))).unwrap();
        let on_demand = Engine::new(&engine_config(false, None)).unwrap();
        let bytes = wat::parse_str("(component (core module))").unwrap();
        let cache = |e: &Engine| CompileCache::new(dir.clone(), e).unwrap();
        cache(&plain).put("sha256:00", &Component::new(&plain, &bytes).unwrap());
        // Fuel changes the code: a metered engine must compile its own.
        assert_eq!(cache(&metered).get(&metered, "sha256:00").1, crate::compile_cache::Lookup::Miss);
        assert_ne!(cache(&plain).path("sha256:00"), cache(&metered).path("sha256:00"));
        // The allocator does not: either may use the other's compilation.
        assert_eq!(cache(&on_demand).get(&on_demand, "sha256:00").1, crate::compile_cache::Lookup::Hit);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_pool_fits_the_largest_memory_a_tenant_may_get() {
        let mut limits = crate::limits::Limits::default();
        limits.memory_bytes = crate::limits::MAX_MEMORY_BYTES;
        crate::runtime::Runtime::with_allocator(limits, crate::OutboundConfig::default(), Allocator::Pooling).expect("pooling runtime");
    }
}
