//! Helpers shared by the binary's integration tests.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn safestep(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_safestep"))
        .args(args)
        .output()
        .expect("the safestep binary starts")
}

pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("safestep-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Writes `text` as a config file in the scratch folder `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> String {
    std::fs::create_dir_all(dir).expect("scratch dir");
    let path = dir.join("in.toml");
    std::fs::write(&path, text).expect("config written");
    path.to_str().expect("utf-8").to_string()
}

/// `tasks.csv` without the wall-clock column (the only one that may differ between runs).
pub fn tasks_without_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("tasks.csv"))
        .expect("tasks.csv")
        .lines()
        .map(|line| {
            let mut cols: Vec<&str> = line.split(',').collect();
            cols.remove(5);
            cols.join(",")
        })
        .collect()
}

pub const SMALL: [&str; 10] = [
    "--tasks",
    "3",
    "--epochs",
    "2",
    "--examples",
    "200",
    "--batch-size",
    "32",
    "--quiet",
    "--force",
];

pub fn run_small(out: &Path, extra: &[&str]) -> Output {
    let out = out.to_str().expect("utf-8 temp path");
    let mut args = vec!["run", "--out", out];
    args.extend(SMALL);
    args.extend(extra);
    safestep(&args)
}

/// One task of one full-batch step on 32 examples: with lr 1e12 that one step leaves the
/// weights finite and the network's outputs not (the diverging-run tests).
pub const ONE_FULL_BATCH_STEP: [&str; 8] = [
    "--tasks",
    "1",
    "--epochs",
    "1",
    "--examples",
    "32",
    "--batch-size",
    "32",
];
