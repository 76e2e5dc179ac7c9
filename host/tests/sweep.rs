//! A sweep planned onto disk (`compare --slurm`), run line by line (what Slurm array tasks
//! run) or by concurrent workers, gives the same table, bit for bit, as a local `compare`.

use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{safestep, scratch, tasks_without_time};

const SWEEP: [&str; 16] = [
    "--methods",
    "adam,adam-l2",
    "--schedulers",
    "off,combined",
    "--lrs",
    "1e-3",
    "--seeds",
    "0..2",
    "--tasks",
    "2",
    "--epochs",
    "2",
    "--examples",
    "100",
    "--batch-size",
    "25",
];

fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `compare.csv` without the wall-time column.
fn table(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("compare.csv"))
        .expect("compare.csv")
        .lines()
        .map(|l| {
            let mut cols: Vec<&str> = l.split(',').collect();
            cols.remove(10);
            cols.join(",")
        })
        .collect()
}

fn plan(slurm: &Path, out: &Path) {
    let mut args = vec![
        "compare",
        "--quiet",
        "--slurm",
        slurm.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
        "--partition",
        "debug",
        "--throttle",
        "3",
        "--sbatch=--qos=normal",
    ];
    args.extend(SWEEP);
    ok(&safestep(&args));
}

#[test]
fn planned_lines_run_one_by_one_equal_a_local_compare() {
    let local = scratch("sweep-local");
    let mut args = vec![
        "compare",
        "--quiet",
        "--jobs",
        "2",
        "--out",
        local.to_str().expect("utf-8"),
    ];
    args.extend(SWEEP);
    ok(&safestep(&args));

    let (slurm, out) = (scratch("sweep-plan"), scratch("sweep-out"));
    plan(&slurm, &out);
    let manifest = std::fs::read_to_string(slurm.join("manifest.jsonl")).expect("manifest");
    assert_eq!(manifest.lines().count(), 8);
    let array = std::fs::read_to_string(slurm.join("array.sbatch")).expect("array.sbatch");
    for needle in [
        "--array=0-7%3",
        "--partition=debug",
        "--qos=normal",
        "--line \"$SLURM_ARRAY_TASK_ID\"",
    ] {
        assert!(array.contains(needle), "{needle} missing:\n{array}");
    }
    let submit = std::fs::read_to_string(slurm.join("submit.sh")).expect("submit.sh");
    assert!(submit.contains("--dependency=afterany:"), "{submit}");
    assert!(slurm.join("collect.sbatch").is_file());

    // Run every line but one, as array tasks would; the collection lists the missing one.
    let s = slurm.to_str().expect("utf-8");
    for line in (0..8).filter(|&l| l != 5) {
        ok(&safestep(&[
            "compare",
            "--quiet",
            "--manifest",
            s,
            "--line",
            &line.to_string(),
        ]));
    }
    let collected = safestep(&["compare", "--collect", s]);
    ok(&collected);
    let report = String::from_utf8_lossy(&collected.stdout);
    assert!(report.contains("missing line 5"), "{report}");
    let resubmit = safestep(&["compare", "--slurm", s, "--resubmit"]);
    ok(&resubmit);
    let script = std::fs::read_to_string(slurm.join("resubmit.sbatch")).expect("resubmit");
    assert!(script.contains("--array=5\n"), "{script}");
    // A line that finished is kept, not re-run; the last one completes the sweep.
    let kept = safestep(&["compare", "--quiet", "--manifest", s, "--line", "0"]);
    ok(&kept);
    assert!(String::from_utf8_lossy(&kept.stdout).contains("Kept"));
    ok(&safestep(&[
        "compare",
        "--quiet",
        "--manifest",
        s,
        "--line",
        "5",
    ]));
    ok(&safestep(&["compare", "--collect", s]));
    assert_eq!(table(&out), table(&local));
    assert!(slurm.join("plots").join("accuracy.png").is_file());
    for entry in std::fs::read_dir(&local).expect("local runs").flatten() {
        let run = entry.path();
        if run.join("summary.json").is_file() {
            let name = run.file_name().expect("name");
            assert_eq!(
                tasks_without_time(&run),
                tasks_without_time(&out.join(name))
            );
        }
    }
}

#[test]
fn concurrent_workers_share_a_sweep_without_overlap() {
    let (slurm, out) = (scratch("worker-plan"), scratch("worker-out"));
    plan(&slurm, &out);
    let s = slurm.to_str().expect("utf-8");
    let workers: Vec<_> = (0..2)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_safestep"))
                .args(["compare", "--manifest", s, "--worker"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("worker starts")
        })
        .collect();
    let mut ran = 0;
    for w in workers {
        let out = w.wait_with_output().expect("worker ends");
        ok(&out);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let n: usize = text
            .split("ran ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {text}"));
        ran += n;
    }
    // Every line ran exactly once between the two workers.
    assert_eq!(ran, 8);
    let collected = safestep(&["compare", "--collect", s]);
    ok(&collected);
    assert!(!String::from_utf8_lossy(&collected.stdout).contains("missing"));
}

#[test]
fn a_diverging_run_does_not_stop_the_sweep_and_is_listed() {
    // lr 1e12 (lr_max raised to allow it) diverges in its first task; lr 1e-3 does not.
    let dir = scratch("sweep-diverged");
    let cfg = common::write_config(&dir, "[scheduler]\nlr_max = 1e13\n");
    let out = dir.join("out");
    let out_dir = out.to_str().expect("utf-8");
    let sweep = [
        "compare",
        "--quiet",
        "--config",
        &cfg,
        "--schedulers",
        "off",
        "--lrs",
        "1e-3,1e12",
        "--seeds",
        "0..2",
        "--out",
        out_dir,
    ];
    let run = safestep(&[&sweep[..], &common::ONE_FULL_BATCH_STEP].concat());
    let err = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{err}");
    assert!(err.contains("2 of 4 runs stopped in training"), "{err}");
    assert!(err.contains("adam_off_lr1000000000000_seed1"), "{err}");
    // The finished lr has its row with both seeds; the diverged one is in failed.csv.
    let rows = table(&out);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows[1].starts_with("adam,off,0.001,2,"), "{rows:?}");
    let failed = std::fs::read_to_string(out.join("failed.csv")).expect("failed.csv");
    assert_eq!(failed.lines().count(), 3, "{failed}");
    assert!(failed.contains("evaluation loss"), "{failed}");
}
