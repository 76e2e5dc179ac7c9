//! Sweeps beyond one process: a comparison planned onto disk, run line by line by Slurm
//! array tasks or by local workers, and collected from whatever has finished.
//!
//! `safestep compare … --slurm DIR` writes into `DIR`:
//!
//! - `manifest.jsonl`: one line per combination — its index, label, run folder and complete
//!   resolved configuration (the same combinations, in the same order, that `compare` would
//!   run);
//! - `array.sbatch`: a job array with one task per line, each running
//!   `safestep compare --manifest DIR --line $SLURM_ARRAY_TASK_ID`;
//! - `collect.sbatch`: the table step (`safestep compare --collect DIR`), submitted with
//!   `--dependency=afterany` on the array;
//! - `submit.sh`: submits both and prints the job ids.
//!
//! A line's run follows `compare`'s reuse rules: a finished run of the same configuration is
//! kept, a killed or preempted one resumes from its checkpoint (so a requeue loses at most
//! one task), anything else starts afresh. The run folder's lock ([`crate::folder`]) keeps
//! two processes off one line, which is all `--worker` needs: each worker takes the next
//! line whose folder is neither finished nor locked.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compare::{aggregate, finished_run, write_tables, Combination, CompareRow, PlannedRun};
use crate::config::{ConfigError, RunConfig};
use crate::folder::{FolderError, RunFolder};
use crate::outputs::{write_atomic, OutputError, Summary, CHECKPOINT_FILE};
use crate::runner::{run_in, RunError, RunOptions};

/// Name of the manifest in a sweep folder.
pub const MANIFEST_FILE: &str = "manifest.jsonl";

/// One line of `manifest.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestLine {
    /// Line index (the Slurm array task id).
    pub line: usize,
    /// The run's label (method, scheduler, lr, seed).
    pub label: String,
    /// The run folder.
    pub dir: PathBuf,
    /// The complete configuration, as `config.toml` holds it.
    pub config: String,
    /// The comparison's output folder (where `--collect` writes the tables).
    pub out: PathBuf,
}

/// `#SBATCH` settings of the array job (each passed through when given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (e.g. `02:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task` (default 1: each run is single-threaded).
    pub cpus_per_task: Option<usize>,
    /// `--mem` (e.g. `2G`).
    pub mem: Option<String>,
    /// At most this many array tasks at once (`--array=…%N`).
    pub throttle: Option<usize>,
    /// `--account`.
    pub account: Option<String>,
    /// Further `#SBATCH` lines, verbatim (e.g. `--qos=long`).
    pub extra: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Quotes a string for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the manifest and the Slurm scripts of `planned` into `dir` (nothing is run).
///
/// # Errors
/// [`OutputError`] naming the file that could not be written.
pub fn write_slurm(
    dir: &Path,
    planned: &[PlannedRun],
    out: &Path,
    opts: &SlurmOptions,
) -> Result<Vec<PathBuf>, RunError> {
    let dir = absolute(dir);
    fs::create_dir_all(dir.join("logs")).map_err(io_err(&dir))?;
    let out = absolute(out);
    let mut manifest = String::new();
    for (line, p) in planned.iter().enumerate() {
        let entry = ManifestLine {
            line,
            label: p.config.label(),
            dir: absolute(&p.dir),
            config: p.config.to_toml(),
            out: out.clone(),
        };
        // Plain strings and numbers always serialise.
        manifest.push_str(&serde_json::to_string(&entry).unwrap_or_default());
        manifest.push('\n');
    }
    let manifest_path = dir.join(MANIFEST_FILE);
    write_atomic(&manifest_path, manifest.as_bytes())?;
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "safestep".to_string());
    let written = vec![
        manifest_path,
        write_script(
            &dir,
            "array.sbatch",
            &array_script(&dir, &exe, planned.len(), None, opts),
        )?,
        write_script(&dir, "collect.sbatch", &collect_script(&dir, &exe, opts))?,
        write_script(&dir, "submit.sh", &submit_script(&dir, "array.sbatch"))?,
    ];
    Ok(written)
}

fn write_script(dir: &Path, name: &str, text: &str) -> Result<PathBuf, RunError> {
    let path = dir.join(name);
    write_atomic(&path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).map_err(io_err(&path))?;
    }
    Ok(path)
}

fn sbatch_header(opts: &SlurmOptions, name: &str) -> String {
    let mut h = format!("#!/bin/bash\n#SBATCH --job-name={name}\n");
    let mut line = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            let _ = writeln!(h, "#SBATCH --{k}={v}");
        }
    };
    line("partition", &opts.partition);
    line("time", &opts.time);
    line("mem", &opts.mem);
    line("account", &opts.account);
    let _ = writeln!(
        h,
        "#SBATCH --cpus-per-task={}",
        opts.cpus_per_task.unwrap_or(1)
    );
    for extra in &opts.extra {
        let _ = writeln!(h, "#SBATCH {extra}");
    }
    h
}

/// The array job over `lines` (all `0..count` when `None`).
fn array_script(
    dir: &Path,
    exe: &str,
    count: usize,
    lines: Option<&[usize]>,
    opts: &SlurmOptions,
) -> String {
    let spec = match lines {
        Some(lines) => lines
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(","),
        None => format!("0-{}", count.saturating_sub(1)),
    };
    let throttle = opts.throttle.map(|n| format!("%{n}")).unwrap_or_default();
    let mut s = sbatch_header(opts, "safestep-sweep");
    let logs = dir.join("logs");
    let _ = writeln!(s, "#SBATCH --array={spec}{throttle}");
    let _ = writeln!(s, "#SBATCH --output={}/%a.out", logs.display());
    let _ = writeln!(s, "#SBATCH --error={}/%a.err", logs.display());
    s.push_str("#SBATCH --requeue\n");
    let _ = writeln!(
        s,
        "# One line of {MANIFEST_FILE} per array task: finished runs are kept, interrupted ones\n# resume from their checkpoint.\nexec {} compare --manifest {} --line \"$SLURM_ARRAY_TASK_ID\"",
        sh_quote(exe),
        sh_quote(&dir.display().to_string())
    );
    s
}

fn collect_script(dir: &Path, exe: &str, opts: &SlurmOptions) -> String {
    let mut s = sbatch_header(
        &SlurmOptions {
            throttle: None,
            ..opts.clone()
        },
        "safestep-collect",
    );
    let _ = writeln!(
        s,
        "#SBATCH --output={}/collect.out",
        dir.join("logs").display()
    );
    let _ = writeln!(
        s,
        "exec {} compare --collect {}",
        sh_quote(exe),
        sh_quote(&dir.display().to_string())
    );
    s
}

fn submit_script(dir: &Path, array: &str) -> String {
    let d = sh_quote(&dir.display().to_string());
    format!(
        "#!/bin/bash\n# Submits the sweep's array job and the dependent table step; prints both job ids.\nset -euo pipefail\ncd {d}\narray=$(sbatch --parsable {array})\ncollect=$(sbatch --parsable --dependency=afterany:\"${{array%%;*}}\" collect.sbatch)\necho \"array job ${{array%%;*}}, collect job ${{collect%%;*}}\"\n"
    )
}

/// Reads a sweep folder's manifest.
///
/// # Errors
/// [`RunError::Config`] (field `--manifest`) when it is missing or a line does not parse.
pub fn read_manifest(dir: &Path) -> Result<Vec<ManifestLine>, RunError> {
    let path = dir.join(MANIFEST_FILE);
    let bad = |problem: String| {
        RunError::Config(ConfigError::new(
            "--manifest",
            dir.display(),
            &format!("a sweep folder written by `compare --slurm` ({problem})"),
        ))
    };
    let text = fs::read_to_string(&path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str::<ManifestLine>(l)
                .map_err(|e| bad(format!("line {}: {e}", i + 1)))
                .and_then(|m| {
                    if m.line == i {
                        Ok(m)
                    } else {
                        Err(bad(format!("line {} says it is line {}", i + 1, m.line)))
                    }
                })
        })
        .collect()
}

/// What running one manifest line did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineOutcome {
    /// It had finished earlier; nothing ran.
    Kept,
    /// It ran (fresh or resumed) to its end.
    Ran,
    /// Another process holds its folder.
    Busy,
}

/// Runs manifest line `line`: keeps a finished run, resumes an interrupted one, else runs it
/// afresh.
///
/// # Errors
/// [`RunError::Config`] for a line that does not exist or a configuration that does not
/// parse; any error of the run.
pub fn run_line(
    manifest: &[ManifestLine],
    line: usize,
    quiet: bool,
) -> Result<LineOutcome, RunError> {
    let entry = manifest.get(line).ok_or_else(|| {
        RunError::Config(ConfigError::new(
            "--line",
            line,
            &format!("a line of the manifest (0..{})", manifest.len()),
        ))
    })?;
    let cfg = RunConfig::from_toml_str(&entry.config)
        .map_err(|e| RunError::Config(ConfigError::new("manifest config", line, &e)))?;
    if finished_run(&entry.dir, &cfg).is_some() {
        return Ok(LineOutcome::Kept);
    }
    // Decide under the folder's lock: another worker may have finished it meanwhile.
    let folder = match RunFolder::open(&entry.dir) {
        Ok(folder) => folder,
        Err(FolderError::InUse { .. }) => return Ok(LineOutcome::Busy),
        Err(e) => return Err(e.into()),
    };
    if finished_run(&entry.dir, &cfg).is_some() {
        return Ok(LineOutcome::Kept);
    }
    let resumable = entry.dir.join(CHECKPOINT_FILE).exists()
        && RunConfig::from_toml_file(&entry.dir.join(crate::outputs::CONFIG_FILE))
            .is_ok_and(|c| c == cfg);
    let opts = RunOptions {
        out: entry.dir.clone(),
        quiet,
        resume: resumable,
        force: !resumable,
        stop_after: None,
        threads: 1,
    };
    run_in(folder, &cfg, &opts).map(|_| LineOutcome::Ran)
}

/// A worker: runs every line that is neither finished nor held by another process, until
/// none is left; returns how many it ran.
///
/// # Errors
/// The first failing run (the line stays unfinished for another worker or a resubmit).
pub fn work(manifest: &[ManifestLine], quiet: bool) -> Result<usize, RunError> {
    let mut ran = 0;
    loop {
        let mut progressed = false;
        for line in 0..manifest.len() {
            if run_line(manifest, line, quiet)? == LineOutcome::Ran {
                ran += 1;
                progressed = true;
                if !quiet {
                    eprintln!("[worker {}] line {line} done", std::process::id());
                }
            }
        }
        if !progressed {
            return Ok(ran);
        }
    }
}

/// A line that has not finished, with the tail of its error log.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// The manifest line.
    pub line: usize,
    /// Its label.
    pub label: String,
    /// Whether it started (its folder holds a run).
    pub started: bool,
    /// The last lines of `logs/<line>.err`, if any.
    pub stderr_tail: String,
}

/// Builds the comparison from the finished lines (tables into the manifest's output folder,
/// plots into `DIR/plots`) and lists the unfinished ones.
///
/// # Errors
/// A manifest that does not parse; failures writing the tables.
pub fn collect(dir: &Path) -> Result<(Vec<CompareRow>, Vec<Unfinished>), RunError> {
    let manifest = read_manifest(dir)?;
    let mut done: Vec<(Combination, Summary)> = Vec::new();
    let mut missing = Vec::new();
    for entry in &manifest {
        let cfg = RunConfig::from_toml_str(&entry.config)
            .map_err(|e| RunError::Config(ConfigError::new("manifest config", entry.line, &e)))?;
        match finished_run(&entry.dir, &cfg) {
            Some(summary) => done.push((
                Combination {
                    method: cfg.method,
                    scheduler: cfg.scheduler.mode,
                    lr: cfg.lr,
                    seed: cfg.seed,
                },
                summary,
            )),
            None => missing.push(Unfinished {
                line: entry.line,
                label: entry.label.clone(),
                started: entry.dir.join(crate::outputs::SUMMARY_FILE).exists(),
                stderr_tail: tail(&dir.join("logs").join(format!("{}.err", entry.line)), 5),
            }),
        }
    }
    let rows = aggregate(&done);
    if let Some(out) = manifest.first().map(|m| m.out.clone()) {
        fs::create_dir_all(&out).map_err(io_err(&out))?;
        write_tables(&out, &rows)?;
    }
    let finished: Vec<PathBuf> = manifest
        .iter()
        .filter(|m| !missing.iter().any(|u| u.line == m.line))
        .map(|m| m.dir.clone())
        .collect();
    if !finished.is_empty() {
        crate::plot::plot(&finished, &dir.join("plots")).map_err(|e| {
            RunError::Output(OutputError::Invalid {
                path: dir.join("plots"),
                problem: e.to_string(),
            })
        })?;
    }
    Ok((rows, missing))
}

/// The last `n` lines of a file (empty when it does not exist).
fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `DIR/resubmit.sbatch`: an array of only the lines that have not finished.
/// Returns the script and the lines (none: nothing to resubmit, no script written).
///
/// # Errors
/// A manifest that does not parse; failures writing the script.
pub fn write_resubmit(
    dir: &Path,
    opts: &SlurmOptions,
) -> Result<(Option<PathBuf>, Vec<usize>), RunError> {
    let dir = absolute(dir);
    let manifest = read_manifest(&dir)?;
    let mut lines = Vec::new();
    for entry in &manifest {
        let cfg = RunConfig::from_toml_str(&entry.config)
            .map_err(|e| RunError::Config(ConfigError::new("manifest config", entry.line, &e)))?;
        if finished_run(&entry.dir, &cfg).is_none() {
            lines.push(entry.line);
        }
    }
    if lines.is_empty() {
        return Ok((None, lines));
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "safestep".to_string());
    let script = write_script(
        &dir,
        "resubmit.sbatch",
        &array_script(&dir, &exe, manifest.len(), Some(&lines), opts),
    )?;
    write_script(
        &dir,
        "submit-resubmit.sh",
        &submit_script(&dir, "resubmit.sbatch"),
    )?;
    Ok((Some(script), lines))
}
