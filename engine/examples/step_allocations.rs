//! How often a training step (`forward_backward` + `adam_step`, the default MLP
//! 784-256-256-10) calls the allocator once the engine's buffers are sized, on 1 and 2
//! threads at batch 1, 16 and 256: a counting global allocator around the system one.
//!
//! `cargo run --release -p safestep-engine --example step_allocations`
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use safestep_core::adam::{Adam, AdamConfig};
use safestep_engine::{Backend, CpuBackend, ModelSpec, Regularizer};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let spec = ModelSpec::default();
    let n = 512;
    let x: Vec<f32> = (0..n * 784).map(|i| (i % 13) as f32 / 13.0).collect();
    let y: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let adam = Adam::new(AdamConfig::default()).unwrap();
    for threads in [1, 2] {
        for b in [1usize, 16, 256] {
            let mut cpu = CpuBackend::new(&spec, 1)
                .unwrap()
                .with_threads(threads)
                .unwrap();
            cpu.load_task(&x, &y).unwrap();
            let batch: Vec<u32> = (0..b as u32).collect();
            let lrs = vec![1e-3f32; 3];
            let step = |t: u64, cpu: &mut CpuBackend| {
                cpu.forward_backward(&batch, false).unwrap();
                cpu.adam_step(&adam, &lrs, t, &Regularizer::default())
                    .unwrap();
            };
            for t in 1..=3 {
                step(t, &mut cpu);
            }
            let before = ALLOCS.load(Ordering::Relaxed);
            for t in 4..=13 {
                step(t, &mut cpu);
            }
            let per = (ALLOCS.load(Ordering::Relaxed) - before) as f64 / 10.0;
            println!("threads {threads} batch {b}: {per} allocations per step");
        }
    }
}
