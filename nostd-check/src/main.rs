//! Freestanding check: drives safestep-core's scheduler (and the statistics feeding it)
//! with no std, no allocator and no C runtime, and reports through its exit status:
//! 0 = every check passed, otherwise the number of the first failed check.
//!
//! The only unsafe code in the project lives here: the process entry and the exit
//! system call (x86_64 Linux).
#![no_std]
#![no_main]

use core::panic::PanicInfo;
use safestep_core::adam::{adam_step, AdamConfig, StepStats};
use safestep_core::bounds::Bounds;
use safestep_core::noise::NoiseStats;
use safestep_core::power::{PowerConfig, PowerIteration};
use safestep_core::scheduler::{
    Decision, LayerObservation, LayerScheduler, Mode, Progress, SchedulerConfig,
};

/// Terminates the process with `code` (Linux `exit_group`).
fn exit(code: i32) -> ! {
    // SAFETY: exit_group takes one integer argument and never returns.
    unsafe {
        core::arch::asm!("syscall", in("rax") 231, in("rdi") code, options(noreturn, nostack));
    }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    exit(101)
}

// The kernel enters at `_start` with a 16-byte aligned stack and no return address:
// realign for the C ABI, call into Rust, never return.
core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// Referenced by the precompiled `core` even with panic = abort; never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}

// Without a C library, the memory routines the compiler emits calls to are ours.
// Byte loops through volatile accesses, so they cannot be turned back into calls to
// themselves.

/// `memcpy` for non-overlapping regions.
#[no_mangle]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller guarantees both regions are valid for n bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
    }
    dst
}

/// `memmove`, overlap-safe.
#[no_mangle]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) < (src as usize) {
        for i in 0..n {
            // SAFETY: as memcpy; copying forwards is safe when dst precedes src.
            unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        }
    } else {
        for i in (0..n).rev() {
            // SAFETY: as memcpy; copying backwards is safe when dst follows src.
            unsafe { core::ptr::write_volatile(dst.add(i), core::ptr::read_volatile(src.add(i))) };
        }
    }
    dst
}

/// `memset`.
#[no_mangle]
unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: the caller guarantees dst is valid for n bytes.
        unsafe { core::ptr::write_volatile(dst.add(i), c as u8) };
    }
    dst
}

/// `memcmp` (and `bcmp`).
#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: the caller guarantees both regions are valid for n bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// `bcmp`: equality-only `memcmp`.
#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

extern "C" fn entry() -> ! {
    exit(run())
}

/// Runs the checks; returns 0 or the number of the first that failed.
fn run() -> i32 {
    // 1. A layer of two slices through the fused Adam step.
    let cfg = AdamConfig::<f32>::default();
    let mut w = [0.5f32, -0.5, 0.25, 0.0];
    let mut b = [0.1f32];
    let (gw, gb) = ([0.2f32, -0.1, 0.05, 0.0], [0.3f32]);
    let (mut mw, mut vw, mut mb, mut vb) = ([0.0f32; 4], [0.0f32; 4], [0.0f32; 1], [0.0f32; 1]);
    let mut stats = StepStats::new();
    if adam_step(&cfg, 1e-3, 1, &mut w, &gw, &mut mw, &mut vw, &mut stats).is_err()
        || adam_step(&cfg, 1e-3, 1, &mut b, &gb, &mut mb, &mut vb, &mut stats).is_err()
        || stats.count != 5
        || (w[0] - 0.499).abs() > 1e-6
    {
        return 1;
    }

    // 2. Noise statistics from per-sample gradients (B = 2): S = 2, noise = 1, G² = 3.
    let noise = match NoiseStats::from_sample_grads(&[2.0f64], [&[1.0][..], &[3.0][..]], None) {
        Ok(n) if n.variance == 2.0 && n.unbiased_grad_sq == 3.0 && n.snr() == 3.0 => n,
        _ => return 2,
    };

    // 3. Power iteration on H = diag(3, 1).
    let (mut v, mut hv) = ([1.0f64, 1.0], [0.0f64; 2]);
    let hvp = |x: &[f64], out: &mut [f64]| -> Result<(), ()> {
        out[0] = 3.0 * x[0];
        out[1] = x[1];
        Ok(())
    };
    let cfg_p = PowerConfig {
        tol: 1e-12,
        max_iters: 200,
    };
    match PowerIteration::new().estimate(&cfg_p, &mut v, &mut hv, None, hvp) {
        Ok(l) if (l - 3.0).abs() < 1e-9 => {}
        _ => return 3,
    }

    // 4. Bounds: SNR_g = 3, Vol = 0 → ρ̃* = 2s·3/4.
    match Bounds::compute(0.8f64, 1.0, 2, noise.snr(), 0.0) {
        Ok(bd) if (bd.rho_combined - 1.2).abs() < 1e-12 => {}
        _ => return 4,
    }

    // 5. The scheduler: ρ = 1 × 3 = 3 > 1.2 → cool; mode off → hold, lr untouched.
    let sc = SchedulerConfig::<f64>::default();
    let mut layer = match LayerScheduler::<f64, 32>::new(&sc, 1e-3) {
        Ok(l) => l,
        Err(_) => return 5,
    };
    let obs = LayerObservation {
        lr_used: None,
        alpha_agg: 1.0,
        mean_multiplier: 1.0,
        sharpness: 3.0,
        noise,
    };
    let p = Progress {
        step_in_task: 0,
        steps_per_task: Some(100),
        step: 0,
        total_steps: None,
    };
    match layer.observe(&sc, &obs, p) {
        Ok(r) if r.decision == Decision::Cool && (r.lr_after - 0.99e-3).abs() < 1e-15 => {}
        _ => return 6,
    }
    let off = SchedulerConfig {
        mode: Mode::Off,
        ..sc
    };
    let mut fixed = match LayerScheduler::<f64, 32>::new(&off, 1e-3) {
        Ok(l) => l,
        Err(_) => return 7,
    };
    for k in 0..50 {
        let p = Progress { step: k, ..p };
        match fixed.observe(&off, &obs, p) {
            Ok(r) if r.decision == Decision::Hold && r.lr_after == 1e-3 => {}
            _ => return 8,
        }
    }

    // 6. f32 scheduler, many events: lr stays finite and clamped.
    let sc32 = SchedulerConfig::<f32>::default();
    let mut l32 = match LayerScheduler::<f32, 32>::new(&sc32, 1e-3) {
        Ok(l) => l,
        Err(_) => return 9,
    };
    let n32 = match NoiseStats::from_variance(1.0f32, 4.0, 32, None) {
        Ok(n) => n,
        Err(_) => return 10,
    };
    for k in 0..2000u64 {
        let obs = LayerObservation {
            lr_used: None,
            alpha_agg: 1.0f32,
            mean_multiplier: 0.0,
            sharpness: 0.01 * (k % 13) as f32,
            noise: n32,
        };
        let p = Progress {
            step_in_task: k % 500,
            steps_per_task: Some(500),
            step: k,
            total_steps: None,
        };
        match l32.observe(&sc32, &obs, p) {
            Ok(r)
                if r.lr_after.is_finite()
                    && r.lr_after >= sc32.lr_min
                    && r.lr_after <= sc32.lr_max => {}
            _ => return 11,
        }
    }
    0
}
