//! End-to-end tests of `safestep run --benchmark slowly-changing-regression`: the outputs
//! carry the squared error and no accuracy, runs are deterministic, a stopped run resumes
//! bit-identically (with the scheduler's statistics on the squared-error loss), and bad
//! input names the field.

mod common;
use std::path::Path;

use common::{safestep, scratch, write_config};

/// `tasks.csv` without its wall-clock column (`wall_seconds`, the fifth of a regression
/// run's columns: the only one that may differ between runs).
fn tasks_without_time(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("tasks.csv"))
        .expect("tasks.csv")
        .lines()
        .map(|line| {
            let mut cols: Vec<&str> = line.split(',').collect();
            cols.remove(4);
            cols.join(",")
        })
        .collect()
}

fn run(out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        "--benchmark",
        "slowly-changing-regression",
        "--tasks",
        "3",
        "--examples",
        "300",
        "--quiet",
        "--force",
        "--out",
        out.to_str().expect("utf-8"),
    ];
    args.extend(extra);
    safestep(&args)
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary"))
        .expect("valid JSON")
}

#[test]
fn a_regression_run_reports_the_squared_error_and_no_accuracy() {
    let (a, b) = (scratch("reg-a"), scratch("reg-b"));
    for dir in [&a, &b] {
        let out = run(dir, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tasks = tasks_without_time(&a);
    assert_eq!(tasks, tasks_without_time(&b), "one seed, one result");
    assert_eq!(tasks.len(), 4, "header and three tasks: {tasks:?}");
    // The learner is 20-5-1: two layers, one lr column each.
    assert_eq!(tasks[0], "task,loss,online_loss,steps,lr_0,lr_1");
    for (k, row) in tasks[1..].iter().enumerate() {
        let cols: Vec<&str> = row.split(',').collect();
        assert_eq!(cols[0], k.to_string());
        // One pass, one example per step.
        assert_eq!(cols[3], "300");
        for c in &cols[1..3] {
            let v: f64 = c.parse().expect("a number");
            assert!(v.is_finite() && v >= 0.0, "{row}");
        }
    }
    let s = summary(&a);
    for key in [
        "mean_online_loss",
        "final_online_loss",
        "final_loss",
        "mean_loss",
    ] {
        assert!(s[key].as_f64().is_some_and(f64::is_finite), "{key}: {s}");
    }
    let text = s.to_string();
    assert!(
        !text.contains("accuracy"),
        "no accuracy is invented: {text}"
    );
    assert_eq!(s["benchmark"], "slowly-changing-regression");
    let config = std::fs::read_to_string(a.join("config.toml")).expect("config.toml");
    for line in [
        "[regression]",
        "bits = 20",
        "slow_bits = 15",
        "target_hidden = 100",
        "beta = 0.7",
        "outputs = 1",
        "epochs = 1",
        "batch_size = 1",
        "hidden = [5]",
    ] {
        assert!(config.contains(line), "config.toml lacks {line}:\n{config}");
    }
    // The run reproduces from its config.toml alone.
    let c = scratch("reg-c");
    let again = safestep(&[
        "run",
        "--config",
        a.join("config.toml").to_str().expect("utf-8"),
        "--quiet",
        "--out",
        c.to_str().expect("utf-8"),
    ]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(tasks_without_time(&c), tasks);
}

#[test]
fn a_stopped_regression_run_with_the_scheduler_resumes_bit_identically() {
    let (full, cut) = (scratch("reg-full"), scratch("reg-cut"));
    // Batches of 8 so the controller's noise statistics are defined.
    let args = ["--scheduler", "combined", "--batch-size", "8"];
    let out = run(&full, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut first = args.to_vec();
    first.extend(["--stop-after", "1"]);
    assert!(run(&cut, &first).status.success());
    assert_eq!(tasks_without_time(&cut).len(), 2, "header and one task");
    let resumed = safestep(&["run", "--resume", cut.to_str().expect("utf-8"), "--quiet"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(tasks_without_time(&full), tasks_without_time(&cut));
    let controller = std::fs::read_to_string(full.join("controller.csv")).expect("controller");
    assert_eq!(
        controller,
        std::fs::read_to_string(cut.join("controller.csv")).expect("controller")
    );
    // 3 tasks × 38 batches (37 of 8, the last of 4): events every 10 steps, two layers each,
    // with finite sharpness and noise from the squared-error loss.
    let mut lines = controller.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).expect(name);
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2 * (3 * 38 / 10));
    for r in &rows {
        for name in ["sharpness", "variance", "mean_grad_sq"] {
            let v: f64 = r[col(name)].parse().expect(name);
            assert!(v.is_finite(), "{name} = {v}");
        }
    }
}

#[test]
fn bad_regression_input_exits_2_and_names_the_field() {
    let dir = scratch("reg-bad");
    let out_dir = dir.join("out");
    let out_dir = out_dir.to_str().expect("utf-8");
    let bits = write_config(
        &dir,
        "benchmark = \"slowly-changing-regression\"\n[regression]\nslow_bits = 30\n",
    );
    let cases: [(&[&str], &str); 3] = [
        (
            &["run", "--config", &bits, "--out", out_dir],
            "regression.slow_bits",
        ),
        (
            &[
                "run",
                "--benchmark",
                "slowly-changing-regression",
                "--epochs",
                "2",
                "--out",
                out_dir,
            ],
            "epochs",
        ),
        (
            &[
                "run",
                "--benchmark",
                "slowly-changing-regression",
                "--backend",
                "cuda",
                "--out",
                out_dir,
            ],
            "backend",
        ),
    ];
    for (args, field) in cases {
        let out = safestep(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(field), "{args:?}: {err}");
    }
    assert!(!Path::new(out_dir).join("tasks.csv").exists());
}

#[test]
fn compare_and_plot_tabulate_the_squared_error() {
    let out = scratch("reg-compare");
    let res = safestep(&[
        "compare",
        "--benchmark",
        "slowly-changing-regression",
        "--tasks",
        "2",
        "--examples",
        "200",
        "--lrs",
        "1e-3,1e-2",
        "--schedulers",
        "off",
        "--seeds",
        "0..2",
        "--quiet",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let csv = std::fs::read_to_string(out.join("compare.csv")).expect("compare.csv");
    let mut lines = csv.lines();
    assert!(lines
        .next()
        .expect("header")
        .starts_with("method,scheduler,lr,seeds,online_loss_mean,online_loss_se,"));
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 2, "{csv}");
    // Each row's stream error is the mean of its two runs' summaries.
    for row in &rows {
        let lr = &row[2];
        let per_seed: Vec<f64> = (0..2)
            .map(|seed| {
                summary(&out.join(format!("adam_off_lr{lr}_seed{seed}")))["mean_online_loss"]
                    .as_f64()
                    .expect("mean_online_loss")
            })
            .collect();
        let mean: f64 = row[4].parse().expect("a number");
        assert!(
            (mean - (per_seed[0] + per_seed[1]) / 2.0).abs() < 1e-12,
            "{row:?}"
        );
    }
    // The best lr is the one with the lower error.
    let errors: Vec<f64> = rows.iter().map(|r| r[4].parse().unwrap()).collect();
    let best = rows
        .iter()
        .position(|r| r[11] == "true")
        .expect("a best lr");
    assert!(errors[best] <= errors[1 - best]);

    let plots = scratch("reg-plots");
    let res = safestep(&[
        "plot",
        out.to_str().expect("utf-8"),
        "--out",
        plots.to_str().expect("utf-8"),
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(plots.join("online_loss.png").is_file() && plots.join("online_loss.svg").is_file());
}
