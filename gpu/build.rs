//! Compiles `kernels/*.cu` to PTX with `nvcc` when the `cuda` feature is on.
//!
//! * `NVCC`: the compiler (default: `nvcc` on `PATH`, then `$CUDA_PATH/bin/nvcc`,
//!   then `/usr/local/cuda/bin/nvcc`). `scripts/cuda-sdk.sh` installs CUDA 13.0.x and
//!   prints the environment to export.
//! * `SAFESTEP_CUDA_ARCH`: the PTX target, `sm_90` by default (the H200 we test on). PTX is
//!   forward compatible: the driver JIT-compiles it for newer GPUs, but it must come from a
//!   toolkit no newer than the driver (13.0.x for the R580 driver).
//!
//! Each kernel file becomes `$OUT_DIR/<name>.ptx`, embedded by `src/ptx.rs`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_PATH");
    println!("cargo:rerun-if-env-changed=SAFESTEP_CUDA_ARCH");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Err(message) = compile_kernels() {
        // A build script reports errors on stderr and by exiting non-zero.
        eprintln!("\nsafestep-gpu build error: {message}\n");
        std::process::exit(1);
    }
}

fn find_nvcc() -> Result<PathBuf, String> {
    if let Some(p) = env::var_os("NVCC") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = env::var_os("PATH") {
        candidates.extend(env::split_paths(&path).map(|d| d.join("nvcc")));
    }
    if let Some(root) = env::var_os("CUDA_PATH") {
        candidates.push(Path::new(&root).join("bin").join("nvcc"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/bin/nvcc"));
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        "the `cuda` feature needs nvcc (CUDA 13.0.x) to compile gpu/kernels/*.cu, and none was \
         found (NVCC unset, no nvcc on PATH, in $CUDA_PATH/bin or /usr/local/cuda/bin).\n\
         Without a CUDA install: `eval \"$(scripts/cuda-sdk.sh)\"` installs the compiler from \
         PyPI and a link-time libcuda stub, then rebuild."
            .to_string()
    })
}

fn check_arch(arch: &str) -> Result<(), String> {
    let digits = arch
        .strip_prefix("sm_")
        .or_else(|| arch.strip_prefix("compute_"));
    match digits {
        Some(d) if !d.is_empty() && d.trim_end_matches(['a', 'f']).chars().all(|c| c.is_ascii_digit()) => Ok(()),
        _ => Err(format!(
            "SAFESTEP_CUDA_ARCH = {arch:?} is not a CUDA architecture (allowed: sm_NN or compute_NN, e.g. sm_90)"
        )),
    }
}

fn compile_kernels() -> Result<(), String> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let out = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);
    let arch = env::var("SAFESTEP_CUDA_ARCH").unwrap_or_else(|_| "sm_90".to_string());
    check_arch(&arch)?;
    let nvcc = find_nvcc()?;
    let kernels = manifest.join("kernels");
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&kernels)
        .map_err(|e| format!("cannot read {}: {e}", kernels.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    for src in &sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let stem = src.file_stem().and_then(|s| s.to_str()).unwrap_or("kernel");
        let ptx = out.join(format!("{stem}.ptx"));
        let output = Command::new(&nvcc)
            .arg("-ptx")
            .arg(format!("-arch={arch}"))
            .args(["-O3", "-std=c++17", "-lineinfo"])
            .arg("-I")
            .arg(&kernels)
            .arg(src)
            .arg("-o")
            .arg(&ptx)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", nvcc.display()))?;
        if !output.status.success() {
            return Err(format!(
                "nvcc failed on {} (arch {arch}):\n{}{}",
                src.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
    }
    println!("cargo:rustc-env=SAFESTEP_CUDA_ARCH={arch}");
    Ok(())
}
