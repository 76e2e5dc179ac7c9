//! End-to-end tests of the `safestep` binary: outputs, determinism, resume, bad input.

mod common;
use common::{run_small, safestep, scratch, tasks_without_time, write_config};

#[test]
fn run_writes_every_output_and_is_deterministic() {
    let (a, b) = (scratch("det-a"), scratch("det-b"));
    for dir in [&a, &b] {
        let out = run_small(dir, &["--scheduler", "combined", "--seed", "7"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for file in ["config.toml", "tasks.csv", "controller.csv", "summary.json"] {
        assert!(a.join(file).is_file(), "missing {file}");
    }
    let tasks = tasks_without_time(&a);
    assert_eq!(tasks.len(), 4, "header and three tasks: {tasks:?}");
    assert_eq!(tasks, tasks_without_time(&b));
    let controller = std::fs::read(a.join("controller.csv")).expect("controller.csv");
    assert_eq!(
        controller,
        std::fs::read(b.join("controller.csv")).expect("controller.csv")
    );
    // 3 tasks × 2 epochs × 7 batches (6 of 32, one of 8) = 42 steps: events after 10, 20,
    // 30 and 40 steps, three layers each.
    let rows = String::from_utf8_lossy(&controller).lines().count() - 1;
    assert_eq!(rows, 12);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(a.join("summary.json")).expect("summary"))
            .expect("valid JSON");
    assert_eq!(summary["tasks"], 3);
    assert!(summary["mean_train_accuracy_last5"].as_f64().is_some());
    assert!(summary["wall_seconds"].as_f64().is_some());
    let config = std::fs::read_to_string(a.join("config.toml")).expect("config.toml");
    for key in ["safety", "cool", "warm_fraction", "lr_max", "interval"] {
        assert!(config.contains(key), "config.toml lacks {key}");
    }
}

#[test]
fn a_run_stopped_early_resumes_to_identical_results() {
    let (full, cut) = (scratch("resume-full"), scratch("resume-cut"));
    let args = ["--scheduler", "combined", "--method", "wasserstein"];
    assert!(run_small(&full, &args).status.success());
    let mut first = args.to_vec();
    first.extend(["--stop-after", "1"]);
    let stopped = run_small(&cut, &first);
    assert!(stopped.status.success());
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("--resume"));
    assert_eq!(tasks_without_time(&cut).len(), 2, "header and one task");
    let resumed = safestep(&["run", "--resume", cut.to_str().expect("utf-8"), "--quiet"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(tasks_without_time(&full), tasks_without_time(&cut));
    assert_eq!(
        std::fs::read(full.join("controller.csv")).expect("controller.csv"),
        std::fs::read(cut.join("controller.csv")).expect("controller.csv")
    );
}

#[test]
fn bad_input_exits_2_and_names_the_field() {
    let dir = scratch("bad");
    let out_dir = dir.to_str().expect("utf-8");
    let cases: [(&[&str], &str); 6] = [
        (&["run", "--lr", "-1", "--out", out_dir], "lr"),
        (
            &["run", "--batch-size", "0", "--out", out_dir],
            "batch-size",
        ),
        (&["run", "--method", "sgd", "--out", out_dir], "sgd"),
        (&["run", "--config", "/nonexistent/c.toml"], "--config"),
        (
            &["run", "--examples", "1000000", "--out", out_dir],
            "examples",
        ),
        (&["compare", "--seeds", "5..2", "--out", out_dir], "seeds"),
    ];
    for (args, needle) in cases {
        let out = safestep(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_existing_run_is_not_overwritten_without_force() {
    let dir = scratch("exists");
    assert!(run_small(&dir, &[]).status.success());
    let out = safestep(&["run", "--out", dir.to_str().expect("utf-8"), "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"));
}

#[test]
fn compare_tabulates_and_plot_draws() {
    let dir = scratch("compare");
    let out = safestep(&[
        "compare",
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
        "1",
        "--examples",
        "100",
        "--batch-size",
        "25",
        "--quiet",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let md = std::fs::read_to_string(dir.join("compare.md")).expect("compare.md");
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| adam")).count(),
        4,
        "{md}"
    );
    let csv = std::fs::read_to_string(dir.join("compare.csv")).expect("compare.csv");
    assert_eq!(csv.lines().count(), 5);
    let plots = dir.join("plots");
    let out = safestep(&[
        "plot",
        dir.to_str().expect("utf-8"),
        "--out",
        plots.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in ["accuracy.png", "accuracy.svg"] {
        let bytes = std::fs::read(plots.join(file)).expect(file);
        assert!(bytes.len() > 1000, "{file} is too small");
    }
    let svg = std::fs::read_to_string(plots.join("accuracy.svg")).expect("svg");
    assert!(svg.contains("adam-l2 / combined"), "legend missing");
}

#[test]
fn the_plasticity_baselines_run_and_resume_bit_identically() {
    // Constants that act within a short run: many replacements, frequent recycling.
    let cfg = write_config(
        &scratch("baselines-cfg"),
        "[methods]\nreplacement_rate = 0.05\nmaturity = 2\nredo_interval = 3\nredo_threshold = 0.5\nperturb = 1e-3\n",
    );
    let c = cfg.as_str();
    for method in ["l2-init", "shrink-perturb", "cbp", "redo"] {
        let (full, cut) = (
            scratch(&format!("{method}-full")),
            scratch(&format!("{method}-cut")),
        );
        let plain = scratch(&format!("{method}-adam"));
        let args = ["--config", c, "--method", method];
        assert!(run_small(&full, &args).status.success(), "{method}");
        assert!(run_small(&plain, &["--config", c]).status.success());
        assert_ne!(
            tasks_without_time(&full),
            tasks_without_time(&plain),
            "{method} changes nothing"
        );
        let mut first = args.to_vec();
        first.extend(["--stop-after", "1"]);
        assert!(run_small(&cut, &first).status.success());
        let resumed = safestep(&["run", "--resume", cut.to_str().unwrap(), "--quiet"]);
        assert!(
            resumed.status.success(),
            "{method}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert_eq!(
            tasks_without_time(&full),
            tasks_without_time(&cut),
            "{method}"
        );
        let cuda = safestep(&[
            "run",
            "--method",
            method,
            "--backend",
            "cuda",
            "--out",
            cut.to_str().unwrap(),
        ]);
        assert_eq!(cuda.status.code(), Some(2), "{method} on cuda");
    }
}

#[test]
fn layer_norm_runs_and_resumes_bit_identically() {
    let (full, cut, plain) = (scratch("ln-full"), scratch("ln-cut"), scratch("ln-plain"));
    let args = ["--scheduler", "combined", "--norm", "layer"];
    let out = run_small(&full, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run_small(&plain, &["--scheduler", "combined"])
        .status
        .success());
    assert_ne!(
        tasks_without_time(&full),
        tasks_without_time(&plain),
        "--norm layer changes nothing"
    );
    let config = std::fs::read_to_string(full.join("config.toml")).expect("config.toml");
    assert!(config.contains("norm = \"layer\""), "{config}");
    let summary = std::fs::read_to_string(full.join("summary.json")).expect("summary.json");
    assert!(summary.contains("\"norm\": \"layer\""), "{summary}");
    let plain_config = std::fs::read_to_string(plain.join("config.toml")).expect("config.toml");
    assert!(!plain_config.contains("\nnorm ="), "{plain_config}");
    let mut first = args.to_vec();
    first.extend(["--stop-after", "1"]);
    assert!(run_small(&cut, &first).status.success());
    assert_eq!(tasks_without_time(&cut).len(), 2, "header and one task");
    let resumed = safestep(&["run", "--resume", cut.to_str().unwrap(), "--quiet"]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(tasks_without_time(&full), tasks_without_time(&cut));
    assert_eq!(
        std::fs::read(full.join("controller.csv")).expect("controller.csv"),
        std::fs::read(cut.join("controller.csv")).expect("controller.csv")
    );
}

#[test]
fn bad_norm_values_exit_2_and_name_the_field() {
    let dir = scratch("bad-norm");
    let out_dir = dir.to_str().expect("utf-8");
    let bad_file = write_config(&scratch("bad-norm-cfg"), "[model]\nnorm = \"batch\"\n");
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["run", "--norm", "batch", "--out", out_dir],
            &["--norm", "batch", "layer"],
        ),
        (
            &["run", "--config", &bad_file, "--out", out_dir],
            &["norm", "batch", "layer"],
        ),
        (
            &[
                "run",
                "--norm",
                "layer",
                "--backend",
                "cuda",
                "--out",
                out_dir,
            ],
            &["model.norm", "layer", "cpu"],
        ),
    ];
    for (args, needles) in cases {
        let out = safestep(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{args:?} lacks {needle}: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn compare_passes_the_norm_to_every_run() {
    let dir = scratch("compare-ln");
    let out = safestep(&[
        "compare",
        "--norm",
        "layer",
        "--methods",
        "adam",
        "--schedulers",
        "off",
        "--seeds",
        "0,1",
        "--tasks",
        "1",
        "--epochs",
        "1",
        "--examples",
        "64",
        "--batch-size",
        "32",
        "--jobs",
        "1",
        "--quiet",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for seed in [0, 1] {
        let run = dir.join(format!("adam-ln_off_lr0.001_seed{seed}"));
        let config = std::fs::read_to_string(run.join("config.toml")).expect("config.toml");
        assert!(config.contains("norm = \"layer\""), "{config}");
    }
}

#[test]
fn compare_results_do_not_depend_on_threads_or_jobs() {
    let dirs = [scratch("cmp-t1"), scratch("cmp-t2")];
    // One run alone on 1 engine thread, then two runs at once on 2 engine threads each.
    for (dir, (jobs, threads)) in dirs.iter().zip([("1", "1"), ("2", "2")]) {
        let out = safestep(&[
            "compare",
            "--schedulers",
            "off,combined",
            "--seeds",
            "3",
            "--tasks",
            "2",
            "--epochs",
            "1",
            "--examples",
            "200",
            "--batch-size",
            "64",
            "--jobs",
            jobs,
            "--threads",
            threads,
            "--quiet",
            "--force",
            "--out",
            dir.to_str().expect("utf-8"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let runs: Vec<_> = std::fs::read_dir(&dirs[0])
        .expect("compare folder")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("tasks.csv").is_file())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    for run in &runs {
        let (a, b) = (dirs[0].join(run), dirs[1].join(run));
        assert_eq!(tasks_without_time(&a), tasks_without_time(&b), "{run:?}");
        assert_eq!(
            std::fs::read(a.join("controller.csv")).expect("controller.csv"),
            std::fs::read(b.join("controller.csv")).expect("controller.csv"),
            "{run:?}"
        );
    }
    let bad = safestep(&[
        "compare",
        "--threads",
        "0",
        "--out",
        dirs[0].to_str().expect("utf-8"),
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--threads"));
}
