//! The kernels, compiled to PTX by `build.rs` (`nvcc -ptx`, architecture
//! `SAFESTEP_CUDA_ARCH`, `sm_90` by default) and embedded in the binary.

/// One kernel family: its source file stem, its PTX text and the entry points it exports.
#[derive(Debug, Clone, Copy)]
pub struct KernelFile {
    /// File stem under `gpu/kernels/` (`gemm` for `gemm.cu`).
    pub name: &'static str,
    /// The PTX emitted by nvcc.
    pub ptx: &'static str,
    /// The `extern "C"` kernels the Rust wrappers launch from this file.
    pub entries: &'static [&'static str],
}

/// The architecture the PTX targets (from `SAFESTEP_CUDA_ARCH` at build time).
pub const ARCH: &str = env!("SAFESTEP_CUDA_ARCH");

macro_rules! ptx {
    ($name:literal) => {
        include_str!(concat!(env!("OUT_DIR"), "/", $name, ".ptx"))
    };
}

/// Tiled SGEMM (`kernels/gemm.cu`).
pub const GEMM: KernelFile = KernelFile {
    name: "gemm",
    ptx: ptx!("gemm"),
    entries: &[
        "sgemm_nn_64",
        "sgemm_nt_64",
        "sgemm_tn_64",
        "sgemm_nn_32",
        "sgemm_nt_32",
        "sgemm_tn_32",
        "sgemm_splitk_reduce",
    ],
};

/// Gather, bias, ReLU/CReLU forward, backward and forward-mode products, column sums
/// (`kernels/activation.cu`).
pub const ACTIVATION: KernelFile = KernelFile {
    name: "activation",
    ptx: ptx!("activation"),
    entries: &[
        "gather_rows",
        "bias_forward",
        "bias_relu_forward",
        "bias_crelu_forward",
        "relu_backward",
        "crelu_backward",
        "relu_jvp",
        "crelu_jvp",
        "col_sum",
    ],
};

/// Softmax cross-entropy forward/backward, loss sums, softmax Hessian product
/// (`kernels/loss.cu`).
pub const LOSS: KernelFile = KernelFile {
    name: "loss",
    ptx: ptx!("loss"),
    entries: &["softmax_xent", "loss_sum", "softmax_hvp"],
};

/// Deterministic reductions and per-sample gradient norms (`kernels/reduce.cu`).
pub const REDUCE: KernelFile = KernelFile {
    name: "reduce",
    ptx: ptx!("reduce"),
    entries: &["sum_sq_partials", "sum_partials", "sample_sq_norms"],
};

/// Fused Adam/AdamW with statistics, preconditioner square root, elementwise scaling
/// (`kernels/adam.cu`).
pub const ADAM: KernelFile = KernelFile {
    name: "adam",
    ptx: ptx!("adam"),
    entries: &["adam_update", "precond_sqrt", "scale_elementwise"],
};

/// Bitonic sort and the Wasserstein regulariser's gradient (`kernels/wasserstein.cu`).
pub const WASSERSTEIN: KernelFile = KernelFile {
    name: "wasserstein",
    ptx: ptx!("wasserstein"),
    entries: &[
        "sort_prepare",
        "bitonic_global",
        "bitonic_local",
        "wasserstein_grad",
    ],
};

/// Initialisation and reset fills (`kernels/init.cu`).
pub const INIT: KernelFile = KernelFile {
    name: "init",
    ptx: ptx!("init"),
    entries: &["fill_uniform", "fill_value", "copy_values"],
};

/// Every kernel family, in load order.
pub const ALL: [KernelFile; 7] = [GEMM, ACTIVATION, LOSS, REDUCE, ADAM, WASSERSTEIN, INIT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_point_is_in_its_ptx() {
        for file in ALL {
            assert!(file.ptx.contains(".version"), "{}: not PTX", file.name);
            assert!(
                file.ptx.contains(&format!(".target {ARCH}")),
                "{}: wrong target",
                file.name
            );
            for entry in file.entries {
                assert!(
                    file.ptx.contains(&format!(".entry {entry}(")),
                    "{}: entry {entry} missing",
                    file.name
                );
            }
        }
    }

    #[test]
    fn every_kernel_in_the_ptx_is_listed() {
        for file in ALL {
            for line in file.ptx.lines() {
                if let Some(rest) = line.trim_start().strip_prefix(".visible .entry ") {
                    let name = rest.split('(').next().unwrap_or("");
                    assert!(
                        file.entries.contains(&name),
                        "{}: {name} not in entries",
                        file.name
                    );
                }
            }
        }
    }

    #[test]
    fn ptx_isa_is_accepted_by_the_r580_driver() {
        // CUDA 13.0 (driver R580) reads PTX ISA up to 9.0; newer toolkits emit newer ISAs.
        for file in ALL {
            let line = file
                .ptx
                .lines()
                .find(|l| l.starts_with(".version"))
                .unwrap_or("");
            let v: Vec<u32> = line
                .trim_start_matches(".version")
                .trim()
                .split('.')
                .filter_map(|x| x.parse().ok())
                .collect();
            assert!(
                v.len() == 2 && (v[0], v[1]) <= (9, 0),
                "{}: {line}",
                file.name
            );
        }
    }
}
