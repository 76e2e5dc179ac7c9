//! The binary under careless and hostile use: overflowing configurations, two runs on one
//! folder, damaged checkpoints, kills at random moments, memory bombs, huge sweeps, and
//! input that must be refused before anything is written.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{run_small, safestep, scratch, tasks_without_time, write_config, ONE_FULL_BATCH_STEP};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file of a run folder parses, they agree on the finished tasks, and no temporary
/// file is left in it. Files are read through `run_file`, as the binary reads them: a run
/// killed between making a snapshot current and linking its files into `DIR` leaves some
/// `DIR/<file>` links out until the next run recreates them.
fn assert_consistent(dir: &Path) -> usize {
    let read = |file: &str| {
        std::fs::read_to_string(safestep_host::folder::run_file(dir, file))
            .unwrap_or_else(|e| panic!("{file} readable in {dir:?}: {e}"))
    };
    let summary: serde_json::Value =
        serde_json::from_str(&read("summary.json")).expect("summary.json parses");
    let tasks = summary["tasks"].as_u64().expect("tasks") as usize;
    let rows = read("tasks.csv").lines().count() - 1;
    assert_eq!(rows, tasks, "tasks.csv rows vs summary.json in {dir:?}");
    let controller = read("controller.csv");
    let mut reader = csv::Reader::from_reader(controller.as_bytes());
    let max_task = reader
        .records()
        .map(|r| {
            r.expect("controller row parses")[2]
                .parse::<usize>()
                .expect("task")
        })
        .max();
    assert!(
        max_task.is_none_or(|t| t < tasks),
        "controller.csv ahead of summary.json"
    );
    if tasks > 0 {
        let path = safestep_host::folder::run_file(dir, "checkpoint.bin");
        let bytes = std::fs::read(&path).expect("checkpoint");
        let ck = safestep_host::checkpoint::decode(&bytes).expect("checkpoint decodes");
        assert_eq!(ck.next_task, tasks);
    }
    tasks
}

fn temporaries(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in walk(dir) {
        let name = entry.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.filter(|n| n.contains(".tmp-")) {
            found.push(name);
        }
    }
    found
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn an_overflowing_step_stops_the_run_naming_layer_step_and_quantity() {
    let dir = scratch("overflow");
    for (config, quantity) in [
        (
            "method = \"adam-l2\"\n[methods]\nl2 = 1e30\n",
            "would overflow",
        ),
        (
            "method = \"wasserstein\"\n[methods]\nwasserstein = 1e30\n",
            "would overflow",
        ),
    ] {
        let cfg = write_config(&dir, config);
        let out = run_small(&dir.join("run"), &["--config", &cfg]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for needle in ["optimizer step", "layer", quantity] {
            assert!(err.contains(needle), "{needle} missing: {err}");
        }
        // The folder still holds one consistent snapshot (here: before the first task).
        assert_eq!(assert_consistent(&dir.join("run")), 0);
    }
}

#[test]
fn a_diverged_evaluation_stops_the_run_before_the_task_is_committed() {
    // lr 1e12 on one full-batch step: the step is finite, the network's outputs are not.
    let dir = scratch("diverged");
    let cfg = write_config(&dir, "lr = 1e12\n[scheduler]\nlr_max = 1e13\n");
    let run = dir.join("run");
    let out = safestep(
        &[
            &[
                "run",
                "--config",
                &cfg,
                "--quiet",
                "--out",
                run.to_str().expect("utf-8"),
            ][..],
            &ONE_FULL_BATCH_STEP,
        ]
        .concat(),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("task 0") && err.contains("evaluation loss"),
        "{err}"
    );
    assert_eq!(
        assert_consistent(&run),
        0,
        "the diverged task was committed"
    );
}

#[test]
fn simultaneous_runs_on_one_folder_one_wins_the_other_names_its_pid() {
    let dir = scratch("lock-race");
    assert!(run_small(&dir, &[]).status.success());
    for _ in 0..10 {
        let start = || {
            Command::new(env!("CARGO_BIN_EXE_safestep"))
                .args(["run", "--tasks", "2", "--epochs", "2", "--force", "--quiet"])
                .arg("--out")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run starts")
        };
        let (a, b) = (start(), start());
        let (a, b) = (
            a.wait_with_output().expect("a"),
            b.wait_with_output().expect("b"),
        );
        let codes = [a.status.code(), b.status.code()];
        assert!(codes.contains(&Some(0)), "{codes:?}");
        for out in [&a, &b] {
            let err = stderr(out);
            if out.status.code() == Some(2) {
                assert!(err.contains("in use") && !err.contains("unknown"), "{err}");
            }
        }
    }
}

#[test]
fn a_second_run_on_the_same_folder_is_refused_naming_the_holder() {
    let dir = scratch("lock");
    let holder = Command::new(env!("CARGO_BIN_EXE_safestep"))
        .args(["run", "--tasks", "4", "--epochs", "40", "--quiet", "--out"])
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("first run starts");
    let start = Instant::now();
    while !dir.join("current").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "first run never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = safestep(&[
        "run",
        "--force",
        "--quiet",
        "--out",
        dir.to_str().expect("utf-8"),
    ]);
    let mut holder = holder;
    let _ = holder.kill();
    let _ = holder.wait();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains("in use"), "{err}");
    assert!(
        err.contains(&holder.id().to_string()),
        "holder pid missing: {err}"
    );
}

#[test]
fn a_damaged_checkpoint_is_refused_naming_the_damage() {
    let dir = scratch("damage");
    assert!(run_small(&dir, &["--stop-after", "1"]).status.success());
    let path = dir.join("checkpoint.bin");
    let good = std::fs::read(&path).expect("checkpoint");
    let resume = || safestep(&["run", "--resume", dir.to_str().expect("utf-8"), "--quiet"]);
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x10;
    let mut appended = good.clone();
    appended.extend_from_slice(b"junk");
    for (bytes, needle) in [
        (flipped, "checksum"),
        (appended, "appended"),
        (good[..good.len() - 3].to_vec(), "truncated"),
        (
            b"garbage that is long enough to hold a header".to_vec(),
            "magic",
        ),
    ] {
        std::fs::write(&path, &bytes).expect("checkpoint rewritten");
        let out = resume();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // A checkpoint that is intact but disagrees with tasks.csv is refused too.
    std::fs::write(&path, &good).expect("checkpoint restored");
    let tasks = std::fs::read_to_string(dir.join("tasks.csv")).expect("tasks.csv");
    let header = tasks.lines().next().expect("header").to_string() + "\n";
    std::fs::write(dir.join("tasks.csv"), &header).expect("tasks.csv emptied");
    let out = resume();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("tasks.csv"), "{}", stderr(&out));
    std::fs::write(dir.join("tasks.csv"), &tasks).expect("tasks.csv restored");
    // controller.csv edited in place, same length: its checksum gives it away.
    let controller = std::fs::read_to_string(dir.join("controller.csv")).expect("controller");
    let digit = controller
        .find(|c: char| c.is_ascii_digit() && c != '7')
        .expect("a digit");
    let mut edited = controller.clone();
    edited.replace_range(digit..digit + 1, "7");
    std::fs::write(dir.join("controller.csv"), &edited).expect("controller edited");
    let out = resume();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("controller.csv"), "{}", stderr(&out));
    // A missing log is a refused resume (exit 2), not an I/O failure.
    let current = dir.join("current").join("controller.csv");
    std::fs::remove_file(&current).expect("controller removed");
    let out = resume();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot read"), "{}", stderr(&out));
    std::fs::write(&current, &controller).expect("controller restored");
    // A run killed between making its snapshot current and linking its files: the links
    // are recreated, and the resume goes on.
    std::fs::remove_file(dir.join("checkpoint.bin")).expect("link removed");
    std::fs::remove_file(dir.join("config.toml")).expect("link removed");
    let out = resume();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(assert_consistent(&dir), 3);
}

#[test]
fn kill_9_at_random_moments_then_resume_ends_as_an_uninterrupted_run() {
    let args = [
        "--tasks",
        "6",
        "--epochs",
        "3",
        "--examples",
        "200",
        "--batch-size",
        "32",
        "--scheduler",
        "combined",
        "--quiet",
    ];
    let full = scratch("kill-full");
    let started = Instant::now();
    let out = safestep(&[&["run", "--out", full.to_str().expect("utf-8")][..], &args].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    // Kills land anywhere in the first 60 % of a whole run's time (measured here, so that
    // a loaded machine still sees every phase: start-up, training, writing).
    let whole = started.elapsed().as_millis().max(50) as u64;
    let dir = scratch("kill-cut");
    let d = dir.to_str().expect("utf-8").to_string();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut kills = 0;
    while kills < 20 {
        let resume = dir.join("current").exists();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_safestep"));
        if resume {
            cmd.args(["run", "--resume", &d, "--quiet"]);
        } else {
            cmd.args(["run", "--out", &d, "--force"]).args(args);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run starts");
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        std::thread::sleep(Duration::from_millis(state % (whole * 6 / 10)));
        match child.try_wait().expect("child status") {
            Some(status) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                assert!(status.success(), "run failed: {err}");
                // Finished before the kill: start over, so every kill lands in a live run.
                let _ = std::fs::remove_dir_all(&dir);
            }
            None => {
                child.kill().expect("kill -9");
                let _ = child.wait();
                kills += 1;
                if dir.join("current").exists() {
                    assert_consistent(&dir);
                }
            }
        }
    }
    // Finish the last one and compare with the uninterrupted run.
    let mut out = safestep(&["run", "--resume", &d, "--quiet"]);
    if !dir.join("current").exists() {
        out = safestep(&[&["run", "--out", &d][..], &args].concat());
    }
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(assert_consistent(&dir), 6);
    assert_eq!(tasks_without_time(&dir), tasks_without_time(&full));
    assert_eq!(
        std::fs::read(dir.join("controller.csv")).expect("controller"),
        std::fs::read(full.join("controller.csv")).expect("controller")
    );
    assert_eq!(temporaries(&dir), Vec::<String>::new());
}

/// A gzip IDX file whose header claims `n` images of 28×28 zeros (about 1 MB compressed
/// for 1.37 million digits).
fn bomb(dir: &Path, n: u32, rows: u32) {
    std::fs::create_dir_all(dir).expect("dir");
    let images = std::fs::File::create(dir.join("train-images-idx3-ubyte.gz")).expect("file");
    let mut gz = flate2::write::GzEncoder::new(images, flate2::Compression::best());
    for d in [0x803u32, n, rows, 28] {
        gz.write_all(&d.to_be_bytes()).expect("header");
    }
    let zeros = vec![0u8; 784 * 1000];
    for _ in 0..n / 1000 {
        gz.write_all(&zeros).expect("pixels");
    }
    gz.finish().expect("gzip");
    let labels = std::fs::File::create(dir.join("train-labels-idx1-ubyte.gz")).expect("file");
    let mut gz = flate2::write::GzEncoder::new(labels, flate2::Compression::best());
    for d in [0x801u32, n] {
        gz.write_all(&d.to_be_bytes()).expect("header");
    }
    gz.write_all(&vec![0u8; n as usize]).expect("labels");
    gz.finish().expect("gzip");
}

#[test]
fn a_memory_bomb_is_read_within_what_the_run_needs() {
    let data = scratch("bomb");
    bomb(&data, 1_369_000, 28);
    let out = scratch("bomb-run");
    // 1.37 million digits as f32 would take 4.3 GB; the run needs 1000 of them.
    let script = format!(
        "ulimit -v 1500000; exec {} run --mnist-dir {} --tasks 1 --epochs 1 --examples 1000 --quiet --out {}",
        env!("CARGO_BIN_EXE_safestep"),
        data.display(),
        out.display()
    );
    let res = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash");
    assert!(res.status.success(), "{}", stderr(&res));
    // A file of the wrong shape is refused from its header, before it is inflated.
    let wrong = scratch("bomb-shape");
    bomb(&wrong, 100_000, 29);
    let start = Instant::now();
    let res = safestep(&[
        "run",
        "--mnist-dir",
        wrong.to_str().expect("utf-8"),
        "--quiet",
        "--out",
        scratch("bomb-shape-run").to_str().expect("utf-8"),
    ]);
    assert_eq!(res.status.code(), Some(2), "{}", stderr(&res));
    assert!(stderr(&res).contains("29×28"), "{}", stderr(&res));
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn huge_sweeps_are_refused_before_anything_is_allocated() {
    let dir = scratch("huge");
    for seeds in ["0..18446744073709551615", "0..1000000000000"] {
        let out = safestep(&[
            "compare",
            "--seeds",
            seeds,
            "--out",
            dir.to_str().expect("utf-8"),
        ]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("seeds"), "{}", stderr(&out));
    }
    assert!(!dir.exists());
}

#[test]
fn bad_input_is_refused_before_the_folder_is_created_naming_the_field() {
    let dir = scratch("nothing-created");
    let d = dir.to_str().expect("utf-8");
    let cfg_dir = scratch("nothing-created-cfg");
    let configs = [
        ("[adam]\nbeta2 = 0.99999999999\n", "adam.beta2"),
        (
            "method = \"adam-l2\"\n[methods]\nl2 = 1e300\n",
            "methods.l2",
        ),
        (
            "[scheduler]\nlr_min = 0.1\nlr_max = 0.01\n",
            "scheduler.lr_max",
        ),
        // Rounds to 0 in the engine's f32: refused, not run as plain Adam.
        (
            "method = \"adam-l2\"\n[methods]\nl2 = 1e-50\n",
            "methods.l2",
        ),
        ("[methods]\nshrink = 1e-50\n", "methods.shrink"),
    ];
    for (text, field) in configs {
        let cfg = write_config(&cfg_dir, text);
        let out = safestep(&["run", "--config", &cfg, "--out", d]);
        assert_eq!(out.status.code(), Some(2), "{field}: {}", stderr(&out));
        assert!(stderr(&out).contains(field), "{field}: {}", stderr(&out));
        assert!(!dir.exists(), "{field}: the folder was created");
    }
    let flags: [(&[&str], &str); 6] = [
        (&["--examples", "5000"], "examples"),
        (&["--mnist-dir", "/nonexistent"], "/nonexistent"),
        (&["--hidden", "1000000,1000000"], "hidden"),
        (&["--lr", "1e-50"], "lr"),
        (&["--safety", "1e308"], "scheduler.safety"),
        (&["--backend", "cuda"], "cuda"),
    ];
    for (extra, field) in flags {
        if extra.contains(&"cuda") && cfg!(feature = "cuda") {
            continue;
        }
        let out = safestep(&[&["run", "--out", d][..], extra].concat());
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(field), "{extra:?}: {}", stderr(&out));
        assert!(!dir.exists(), "{extra:?}: the folder was created");
    }
}

#[test]
fn resume_with_a_huge_stop_after_runs_to_the_end() {
    let dir = scratch("stop-after");
    assert!(run_small(&dir, &["--stop-after", "1"]).status.success());
    let out = safestep(&[
        "run",
        "--resume",
        dir.to_str().expect("utf-8"),
        "--stop-after",
        "18446744073709551615",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(assert_consistent(&dir), 3);
}
