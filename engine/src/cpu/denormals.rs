//! Flush-to-zero for the engine's own arithmetic.
//!
//! Adam's first moment of a parameter whose gradient is exactly zero (the weights of a dead
//! ReLU unit: about 90 000 of the default model's 200 960 first-layer weights by step 1600
//! of a default `run`) decays by β1 every step into the subnormal range, and there it stays:
//! `0.9 × 2⁻¹⁴⁹` rounds back to `2⁻¹⁴⁹`, so the moment never reaches zero. Every later step
//! then multiplies tens of thousands of subnormals, and x86 cores take a slow microcode
//! assist for each packed operation that meets one.
//!
//! [`FlushDenormals`] sets the FTZ (results that would be subnormal become zero) and DAZ
//! (subnormal inputs read as zero) bits of the calling thread's MXCSR for as long as it
//! lives, and restores the previous value when dropped; the backend's pool threads set them
//! once at start ([`set_on_this_thread`]). Only the engine's calls run this way: the host's
//! statistics and the controller keep IEEE subnormals.
//!
//! What it changes: values below 2⁻¹²⁶ ≈ 1.2·10⁻³⁸ become zero where they arise. In the
//! default runs that is only those stuck first moments, whose contribution to any update is
//! itself subnormal and vanishes when subtracted from a parameter: `tasks.csv`,
//! `controller.csv`, every parameter, every second moment and the controller's state are
//! bit-identical with and without the flush (default `run` and `run --scheduler combined`,
//! 1 and 2 threads); only those first moments read 0 instead of a few times 2⁻¹⁴⁹. A run can
//! still in principle differ in the last bit from one without it (a parameter within a
//! factor ~10⁸ of the subnormal range, a subnormal GEMM product), so `CpuBackend::with_flush_denormals(false)`
//! turns it off. On other architectures this is a no-op.

/// The MXCSR bits FTZ (bit 15) and DAZ (bit 6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr = 0u32;
    // SAFETY: `stmxcsr` stores the 32-bit MXCSR register into the 4 bytes at the given
    // address, which is a valid, aligned, writable `u32` on our stack; it has no other effect.
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(csr: u32) {
    // SAFETY: `ldmxcsr` loads MXCSR from a valid `u32`. Callers only ever write a value read
    // from MXCSR with the FTZ/DAZ bits changed (both defined bits on every x86_64 CPU), so no
    // reserved bit is set; rounding mode and exception masks are left as they were.
    unsafe {
        core::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, preserves_flags, readonly));
    }
}

/// Sets FTZ and DAZ on the calling thread for good (the backend's own pool threads).
pub(super) fn set_on_this_thread() {
    #[cfg(target_arch = "x86_64")]
    write_mxcsr(read_mxcsr() | FTZ_DAZ);
}

/// While alive, the calling thread flushes subnormals to zero; dropping it restores the
/// thread's previous MXCSR (also on unwinding).
pub(super) struct FlushDenormals {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl FlushDenormals {
    /// Sets FTZ and DAZ on this thread until the guard is dropped.
    pub(super) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let saved = read_mxcsr();
            write_mxcsr(saved | FTZ_DAZ);
            FlushDenormals { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushDenormals {}
    }
}

impl Drop for FlushDenormals {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write_mxcsr(self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn flushes_inside_and_restores_after() {
        let tiny = std::hint::black_box(f32::MIN_POSITIVE);
        let half = std::hint::black_box(0.5f32);
        assert!((tiny * half).is_subnormal());
        {
            let _guard = FlushDenormals::new();
            assert_eq!(std::hint::black_box(tiny) * std::hint::black_box(half), 0.0);
            // DAZ: a subnormal input reads as zero.
            let sub = std::hint::black_box(f32::from_bits(1));
            assert_eq!(sub * std::hint::black_box(4.0f32), 0.0);
        }
        assert!((std::hint::black_box(tiny) * std::hint::black_box(half)).is_subnormal());
    }
}
