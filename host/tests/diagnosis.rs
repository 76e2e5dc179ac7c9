//! The diagnosis end to end: runs record indicators.csv without changing their results,
//! and `safestep analyze` scores the signals (or refuses bad input with exit status 2).

mod common;
use common::{run_small, safestep, scratch, tasks_without_time, write_config};

#[test]
fn diagnostics_record_indicators_without_changing_the_run() {
    let (plain, diag) = (scratch("diag-plain"), scratch("diag-on"));
    assert!(run_small(&plain, &[]).status.success());
    let cfg = write_config(
        &scratch("diag-cfg"),
        "[indicators]\nenabled = true\nnetwork_sharpness = true\nhessian_rank = true\nlanczos_steps = 8\n",
    );
    let out = run_small(&diag, &["--config", &cfg]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(tasks_without_time(&plain), tasks_without_time(&diag));
    let text = std::fs::read_to_string(diag.join("indicators.csv")).expect("indicators.csv");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    for col in [
        "sharpness",
        "network_sharpness",
        "hessian_rank",
        "hessian_rank_fraction",
        "effective_rank",
        "stable_rank",
        "rho_combined_mean",
    ] {
        assert!(header.iter().any(|h| h == col), "{col} missing");
    }
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 3 * 3, "3 tasks × 3 layers");
    let idx = |c: &str| header.iter().position(|h| h == c).unwrap();
    for r in &rows {
        let rank: f64 = r[idx("hessian_rank")].parse().unwrap();
        assert!((1.0..=8.0).contains(&rank), "{r:?}");
        let fraction: f64 = r[idx("hessian_rank_fraction")].parse().unwrap();
        assert!(fraction > 0.0 && fraction <= 1.0, "{r:?}");
        assert!(r[idx("network_sharpness")]
            .parse::<f64>()
            .unwrap()
            .is_finite());
    }
    let summary = std::fs::read_to_string(diag.join("summary.json")).unwrap();
    assert!(summary.contains("indicator_seconds"));
    let an = scratch("diag-analysis");
    let res = safestep(&[
        "analyze",
        diag.to_str().unwrap(),
        plain.to_str().unwrap(),
        "--out",
        an.to_str().unwrap(),
    ]);
    assert_eq!(
        res.status.code(),
        Some(2),
        "a run without indicators is refused"
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("indicators.csv"));
    let res = safestep(&[
        "analyze",
        diag.to_str().unwrap(),
        "--out",
        an.to_str().unwrap(),
        "--delta",
        "0.0",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(an.join("analysis.md").is_file() && an.join("bounds.png").is_file());
}
