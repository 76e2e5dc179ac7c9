//! The `safestep` binary: see `safestep --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use safestep_host::cli::{
    parse_seeds, AnalyzeArgs, BenchArgs, Cli, Command, CompareArgs, PlotArgs, RunArgs,
};
use safestep_host::compare::{
    compare, plan, render_table, Combination, CompareOptions, MAX_COMBINATIONS,
};
use safestep_host::config::ConfigError;
use safestep_host::runner::{run, RunError, RunOptions};
use safestep_host::sweep::{self, SlurmOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run(&args),
        Command::Compare(args) => cmd_compare(&args),
        Command::Plot(args) => cmd_plot(&args),
        Command::Bench(args) => cmd_bench(&args),
        Command::Analyze(args) => cmd_analyze(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, message)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

type CmdResult = Result<(), (u8, String)>;

/// The number of cores this process may use (1 when unknown).
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn run_error(e: RunError) -> (u8, String) {
    (e.exit_code() as u8, e.to_string())
}

fn config_error(e: ConfigError) -> (u8, String) {
    (2, e.to_string())
}

fn cmd_run(args: &RunArgs) -> CmdResult {
    let cfg = args.resolve().map_err(config_error)?;
    let out = match (&args.resume, &args.out) {
        (Some(dir), _) | (None, Some(dir)) => dir.clone(),
        (None, None) => PathBuf::from("runs").join(cfg.label()),
    };
    let opts = RunOptions {
        out: out.clone(),
        quiet: args.common.quiet,
        resume: args.resume.is_some(),
        force: args.force,
        stop_after: args.stop_after,
        threads: args.threads.unwrap_or_else(available_cores),
    };
    let summary = run(&cfg, &opts).map_err(run_error)?;
    if !summary.finished {
        println!(
            "stopped after {} of {} tasks; continue with: safestep run --resume {}",
            summary.tasks,
            summary.tasks_planned,
            out.display()
        );
    }
    println!(
        "{} tasks of {} with {} (scheduler {}, lr {}, seed {}) in {:.1} s",
        summary.tasks,
        summary.benchmark,
        summary.method,
        summary.scheduler,
        summary.lr,
        summary.seed,
        summary.wall_seconds
    );
    match (
        summary.mean_train_accuracy,
        summary.mean_train_accuracy_last5,
        summary.final_train_accuracy,
    ) {
        (Some(mean), Some(last5), Some(last)) => println!(
            "end-of-task train accuracy: mean {mean:.4}, last 5 tasks {last5:.4}, final {last:.4}"
        ),
        _ => println!(
            "squared error: online over the stream {:.4}, online final task {:.4}, end of final task {:.4}",
            summary.mean_online_loss.unwrap_or(f64::NAN),
            summary.final_online_loss.unwrap_or(f64::NAN),
            summary.final_loss.unwrap_or(f64::NAN)
        ),
    }
    println!("results in {}", out.display());
    Ok(())
}

fn slurm_options(args: &CompareArgs) -> SlurmOptions {
    SlurmOptions {
        partition: args.partition.clone(),
        time: args.time.clone(),
        cpus_per_task: args.cpus_per_task,
        mem: args.mem.clone(),
        throttle: args.throttle,
        account: args.account.clone(),
        extra: args.sbatch_extra.clone(),
    }
}

/// `compare --collect`, `--manifest`, and `--slurm … --resubmit`: the sweep-folder forms.
fn cmd_sweep(args: &CompareArgs) -> Option<CmdResult> {
    if let Some(dir) = &args.collect {
        return Some((|| {
            let (rows, missing) = sweep::collect(dir).map_err(run_error)?;
            println!("{}", render_table(&rows));
            for m in &missing {
                let state = if m.started {
                    "unfinished"
                } else {
                    "not started"
                };
                println!("missing line {} ({}): {state}", m.line, m.label);
                for l in m.stderr_tail.lines() {
                    println!("    {l}");
                }
            }
            println!(
                "{} of {} runs finished; plots in {}",
                rows.iter().map(|r| r.seeds).sum::<usize>(),
                rows.iter().map(|r| r.seeds).sum::<usize>() + missing.len(),
                dir.join("plots").display()
            );
            Ok(())
        })());
    }
    if let Some(dir) = &args.manifest {
        return Some((|| {
            let manifest = sweep::read_manifest(dir).map_err(run_error)?;
            if args.worker {
                let ran = sweep::work(&manifest, args.common.quiet).map_err(run_error)?;
                println!("worker {}: ran {ran} lines; none left", std::process::id());
            } else if let Some(line) = args.line {
                let outcome =
                    sweep::run_line(&manifest, line, args.common.quiet).map_err(run_error)?;
                println!("line {line}: {outcome:?}");
            } else {
                return Err(config_error(ConfigError::new(
                    "--manifest",
                    dir.display(),
                    "with --line N or --worker",
                )));
            }
            Ok(())
        })());
    }
    if let (Some(dir), true) = (&args.slurm, args.resubmit) {
        return Some((|| {
            match sweep::write_resubmit(dir, &slurm_options(args)).map_err(run_error)? {
                (Some(script), lines) => println!(
                    "{} unfinished lines {lines:?}: {} written; submit with {}",
                    lines.len(),
                    script.display(),
                    dir.join("submit-resubmit.sh").display()
                ),
                (None, _) => println!("every line has finished: nothing to resubmit"),
            }
            Ok(())
        })());
    }
    None
}

fn cmd_compare(args: &CompareArgs) -> CmdResult {
    if let Some(result) = cmd_sweep(args) {
        return result;
    }
    let base = args.common.resolve().map_err(config_error)?;
    let seeds = parse_seeds(&args.seeds).map_err(config_error)?;
    let count = args.methods.len() * args.schedulers.len() * args.lrs.len() * seeds.len();
    if count > MAX_COMBINATIONS {
        return Err(config_error(ConfigError::new(
            "combinations",
            count,
            &format!("at most {MAX_COMBINATIONS} (methods × schedulers × lrs × seeds)"),
        )));
    }
    let mut combos = Vec::new();
    for &method in &args.methods {
        for &scheduler in &args.schedulers {
            for &lr in &args.lrs {
                for &seed in &seeds {
                    combos.push(Combination {
                        method,
                        scheduler,
                        lr,
                        seed,
                    });
                }
            }
        }
    }
    if let Some(dir) = &args.slurm {
        let planned = plan(&base, &combos, &args.out).map_err(run_error)?;
        let files = sweep::write_slurm(dir, &planned, &args.out, &slurm_options(args))
            .map_err(run_error)?;
        for f in files {
            println!("{}", f.display());
        }
        println!(
            "planned {} runs; submit with {}",
            planned.len(),
            dir.join("submit.sh").display()
        );
        return Ok(());
    }
    let jobs = args.jobs.unwrap_or_else(available_cores).max(1);
    // One GEMM thread per run while several share the cores; all of them for a lone run.
    let concurrent = jobs.min(combos.len().max(1));
    let threads = args
        .threads
        .unwrap_or(if concurrent > 1 { 1 } else { available_cores() });
    if !(1..=safestep_engine::cpu::MAX_THREADS).contains(&threads) {
        return Err(config_error(ConfigError::new(
            "--threads",
            threads,
            &format!("1..={}", safestep_engine::cpu::MAX_THREADS),
        )));
    }
    let opts = CompareOptions {
        jobs,
        threads,
        quiet: args.common.quiet,
        force: args.force,
    };
    let comparison = compare(&base, &combos, &args.out, &opts).map_err(run_error)?;
    println!("{}", render_table(&comparison.rows));
    println!(
        "written {} and {}",
        args.out.join("compare.csv").display(),
        args.out.join("compare.md").display()
    );
    if comparison.failed.is_empty() {
        return Ok(());
    }
    let mut message = format!(
        "{} of {} runs stopped in training and are missing from the table:",
        comparison.failed.len(),
        combos.len()
    );
    for f in &comparison.failed {
        message.push_str(&format!(
            "\n  {} ({}): {}",
            f.label,
            f.dir.display(),
            f.error
        ));
    }
    Err((1, message))
}

fn cmd_plot(args: &PlotArgs) -> CmdResult {
    let out = match (&args.out, args.dirs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [single]) => single.clone(),
        (None, _) => PathBuf::from("plots"),
    };
    let files = safestep_host::plot::plot(&args.dirs, &out).map_err(|e| {
        let code = match e {
            safestep_host::plot::PlotError::Draw { .. } => 1,
            _ => 2,
        };
        (code, e.to_string())
    })?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

fn cmd_bench(args: &BenchArgs) -> CmdResult {
    let report = safestep_host::bench::bench(args).map_err(run_error)?;
    println!("{}", report.render());
    if let Some(path) = &args.json {
        safestep_host::outputs::write_atomic(path, report.to_json().as_bytes())
            .map_err(|e| (1, e.to_string()))?;
    }
    Ok(())
}

fn cmd_analyze(args: &AnalyzeArgs) -> CmdResult {
    let opts = safestep_host::analyze::AnalyzeOptions {
        delta: args.delta,
        drop_from: args.drop_from,
        window: args.window,
        bootstrap: args.bootstrap,
        shuffles: args.shuffles,
    };
    let (scores, files) =
        safestep_host::analyze::analyze(&args.dirs, &args.out, &opts).map_err(run_error)?;
    println!("signal                          score  AUROC [95% CI]          chance  lead");
    for s in scores.iter().take(15) {
        println!(
            "{:<30} {:.3}  {:.3} [{:.3}, {:.3}]  {:.3}   {:.2}",
            s.signal, s.score, s.auroc, s.ci.0, s.ci.1, s.chance, s.lead
        );
    }
    println!("({} signals) written: {}", scores.len(), files.len());
    println!("{}", args.out.join("analysis.md").display());
    Ok(())
}
