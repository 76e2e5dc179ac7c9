//! Kernel self-tests against [`crate::reference`] (and the whole MLP against
//! safestep-engine's f64 [`ReferenceMlp`]) and the benchmarks behind `safestep-gpu-check`
//! (and the device tests): every kernel on random sizes, including sizes that are not
//! multiples of the GEMM tiles, and timing of the SGEMM and of the MLP's training step.
//!
//! Failed launches and copies come back as [`BackendError`] (the device error is its
//! source); a failed comparison is a [`Check`] that does not pass.

use std::sync::Arc;
use std::time::Instant;

use safestep_core::adam::{preconditioner_sqrt, Adam, AdamConfig, StepStats, WeightDecay};
use safestep_engine::checks::Batch;
use safestep_engine::reference::ReferenceMlp;
use safestep_engine::{Activation, Backend, BackendError, ModelSpec, Regularizer};

use crate::device::Gpu;
use crate::kernels::{AdamHyper, Indices, SortScratch, ADAM_STATS};
use crate::mlp::GpuMlp;
use crate::reference as r;
use crate::shape::{GemmLayout, GemmShape, MAX_REDUCE_BLOCKS};

/// Results of the self-tests and benchmarks: a device failure, or a refused argument.
pub type SelftestResult<T> = Result<T, BackendError>;

/// Outcome of one kernel check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Kernel (and variant) checked.
    pub name: String,
    /// Sizes used.
    pub sizes: String,
    /// Largest error found (in the check's own measure, see `tol`).
    pub max_err: f64,
    /// Largest error allowed.
    pub tol: f64,
}

impl Check {
    /// Whether the error is within tolerance (and finite).
    pub fn pass(&self) -> bool {
        self.max_err.is_finite() && self.max_err <= self.tol
    }
}

/// A tiny deterministic generator (splitmix64) for test data.
#[derive(Debug, Clone)]
pub struct TestRng(u64);

impl TestRng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        TestRng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        r::splitmix64(self.0)
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / 16_777_216.0)
    }
    /// `n` uniforms in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// Uniform integer in `lo..=hi` (`lo` when `hi < lo`).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi.saturating_sub(lo) as u64 + 1)) as usize
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

/// `cfg` validated for the engine contract.
fn validated(cfg: AdamConfig<f32>) -> SelftestResult<Adam<f32>> {
    Adam::new(cfg).map_err(|e| BackendError::InvalidSpec {
        field: "adam",
        value: e.to_string(),
        allowed: "a valid Adam configuration",
    })
}

fn check(name: impl Into<String>, sizes: impl Into<String>, max_err: f64, tol: f64) -> Check {
    Check {
        name: name.into(),
        sizes: sizes.into(),
        max_err,
        tol,
    }
}

/// Runs every kernel check; returns one [`Check`] per kernel variant and size.
///
/// # Errors
/// [`BackendError::Device`] if a launch or copy itself fails (a failed comparison is a
/// [`Check`] that does not [`pass`](Check::pass)).
pub fn run_kernel_checks(gpu: &Arc<Gpu>, seed: u64) -> SelftestResult<Vec<Check>> {
    gpu.bind()?;
    let mut rng = TestRng::new(seed);
    let mut out = Vec::new();
    check_gemm(gpu, &mut rng, &mut out)?;
    check_activation(gpu, &mut rng, &mut out)?;
    check_loss(gpu, &mut rng, &mut out)?;
    check_reduce(gpu, &mut rng, &mut out)?;
    check_adam(gpu, &mut rng, &mut out)?;
    check_sort(gpu, &mut rng, &mut out)?;
    check_init(gpu, &mut out)?;
    check_mlp(gpu, &mut rng, &mut out)?;
    Ok(out)
}

fn check_gemm(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    let mut shapes = vec![
        (1, 1, 1),
        (7, 13, 5),
        (33, 65, 17),
        (64, 64, 64),
        (100, 37, 129),
        (256, 256, 784),
        (256, 784, 256),
        (10, 256, 256),
        (257, 10, 255),
        (1100, 700, 70), // enough 64x64 tiles for the large-tile kernel on big GPUs
    ];
    for _ in 0..4 {
        shapes.push((rng.range(1, 300), rng.range(1, 300), rng.range(1, 300)));
    }
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for layout in [GemmLayout::NN, GemmLayout::NT, GemmLayout::TN] {
            let a = rng.vec(m * k, -1.0, 1.0);
            let b = rng.vec(k * n, -1.0, 1.0);
            let c0 = rng.vec(m * n, -1.0, 1.0);
            let (alpha, beta) = if i % 3 == 1 { (1.5, 0.5) } else { (1.0, 0.0) };
            let (da, db, dc) = (gpu.upload(&a)?, gpu.upload(&b)?, gpu.upload(&c0)?);
            let shape = GemmShape { m, n, k };
            gpu.sgemm(layout, shape, alpha, da.view(), db.view(), beta, dc.view())?;
            let got = dc.to_vec()?;
            let mut want = c0.clone();
            r::gemm(layout, m, n, k, alpha, &a, &b, beta, &mut want);
            // Error relative to Σ|a||b| of each entry (the scale of its rounding error).
            let abs_a: Vec<f32> = a.iter().map(|x| x.abs()).collect();
            let abs_b: Vec<f32> = b.iter().map(|x| x.abs()).collect();
            let mut scale = vec![0.0; m * n];
            r::gemm(
                layout,
                m,
                n,
                k,
                alpha.abs(),
                &abs_a,
                &abs_b,
                0.0,
                &mut scale,
            );
            let err = got
                .iter()
                .zip(&want)
                .zip(&c0)
                .zip(&scale)
                .map(|(((g, w), c), s)| {
                    let s = f64::from(*s) + (beta.abs() * c.abs()) as f64 + 1e-30;
                    (f64::from(*g) - f64::from(*w)).abs() / s
                })
                .fold(0.0, f64::max);
            let plan = shape.plan(gpu.multiprocessors());
            out.push(check(
                format!(
                    "sgemm_{}_{} split {}",
                    layout.as_str(),
                    plan.tile,
                    plan.splits
                ),
                format!("{} alpha={alpha} beta={beta}", shape.describe()),
                err,
                1e-5,
            ));
        }
    }
    Ok(())
}

fn check_activation(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    for &(rows, cols) in &[
        (1usize, 1usize),
        (37, 53),
        (256, 256),
        (rng.range(1, 300), rng.range(1, 300)),
    ] {
        let sizes = format!("rows={rows} cols={cols}");
        // gather
        let n_img = rows + 5;
        let images = rng.vec(n_img * cols, 0.0, 1.0);
        let idx: Vec<u32> = (0..rows).map(|_| rng.range(0, n_img - 1) as u32).collect();
        let mut ind = Indices::with_capacity(gpu, rows)?;
        ind.set(Batch::new(&idx, n_img)?)?;
        let (dimg, dx) = (gpu.upload(&images)?, gpu.zeros::<f32>(rows * cols)?);
        gpu.gather_rows(dimg.view(), &ind, cols, dx.view())?;
        let want: Vec<f32> = idx
            .iter()
            .flat_map(|&i| images[i as usize * cols..(i as usize + 1) * cols].to_vec())
            .collect();
        out.push(check(
            "gather_rows",
            sizes.clone(),
            max_abs_diff(&dx.to_vec()?, &want),
            0.0,
        ));
        for (name, act, e) in [
            ("bias_forward", None, 0usize),
            ("bias_relu_forward", Some(Activation::Relu), 1),
            ("bias_crelu_forward", Some(Activation::Crelu), 2),
        ] {
            let z = rng.vec(rows * cols, -1.0, 1.0);
            let b = rng.vec(cols, -0.5, 0.5);
            let (dz, db, da) = (
                gpu.upload(&z)?,
                gpu.upload(&b)?,
                gpu.zeros::<f32>(rows * cols * e.max(1))?,
            );
            gpu.bias_act_forward(
                dz.view(),
                db.view(),
                rows,
                cols,
                act,
                act.map(|_| da.view()),
            )?;
            let (mut wz, mut wa) = (z.clone(), vec![0.0; rows * cols * e.max(1)]);
            r::bias_act_forward(&mut wz, &b, rows, cols, e, &mut wa);
            let mut err = max_abs_diff(&dz.to_vec()?, &wz);
            if e > 0 {
                err = err.max(max_abs_diff(&da.to_vec()?, &wa));
            }
            out.push(check(name, sizes.clone(), err, 0.0));
        }
        for act in [Activation::Relu, Activation::Crelu] {
            let e = act.expansion();
            let z = rng.vec(rows * cols, -1.0, 1.0);
            let da = rng.vec(rows * cols * e, -1.0, 1.0);
            let rz = rng.vec(rows * cols, -1.0, 1.0);
            let (dz, dda, drz) = (gpu.upload(&z)?, gpu.upload(&da)?, gpu.upload(&rz)?);
            let (dout, dwide) = (
                gpu.zeros::<f32>(rows * cols)?,
                gpu.zeros::<f32>(rows * cols * e)?,
            );
            gpu.act_backward(act, dz.view(), dda.view(), rows, cols, dout.view())?;
            gpu.act_jvp(act, dz.view(), drz.view(), rows, cols, dwide.view())?;
            let (mut wb, mut wj) = (vec![0.0; rows * cols], vec![0.0; rows * cols * e]);
            r::act_backward(&z, &da, rows, cols, e, &mut wb);
            r::act_jvp(&z, &rz, rows, cols, e, &mut wj);
            let tag = if act == Activation::Relu {
                "relu"
            } else {
                "crelu"
            };
            out.push(check(
                format!("{tag}_backward"),
                sizes.clone(),
                max_abs_diff(&dout.to_vec()?, &wb),
                0.0,
            ));
            out.push(check(
                format!("{tag}_jvp"),
                sizes.clone(),
                max_abs_diff(&dwide.to_vec()?, &wj),
                0.0,
            ));
        }
        let d = rng.vec(rows * cols, -1.0, 1.0);
        let (dd, dsum) = (gpu.upload(&d)?, gpu.zeros::<f32>(cols)?);
        gpu.col_sum(dd.view(), rows, cols, dsum.view())?;
        let err = max_abs_diff(&dsum.to_vec()?, &r::col_sum(&d, rows, cols)) / rows as f64;
        out.push(check("col_sum", sizes, err, 1e-6));
    }
    Ok(())
}

fn check_loss(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    for &(rows, classes) in &[
        (1usize, 2usize),
        (256, 10),
        (37, 33),
        (rng.range(1, 500), rng.range(2, 70)),
    ] {
        let sizes = format!("rows={rows} classes={classes}");
        let z = rng.vec(rows * classes, -4.0, 4.0);
        let n_lab = rows + 3;
        let all_labels: Vec<u8> = (0..n_lab)
            .map(|_| rng.range(0, classes - 1) as u8)
            .collect();
        let idx: Vec<u32> = (0..rows).map(|_| rng.range(0, n_lab - 1) as u32).collect();
        let labels: Vec<u8> = idx.iter().map(|&i| all_labels[i as usize]).collect();
        let mut ind = Indices::with_capacity(gpu, rows)?;
        ind.set(Batch::new(&idx, n_lab)?)?;
        let scale = 1.0 / rows as f32;
        let (dz, dl) = (gpu.upload(&z)?, gpu.upload(&all_labels)?);
        let (dp, dd) = (
            gpu.zeros::<f32>(rows * classes)?,
            gpu.zeros::<f32>(rows * classes)?,
        );
        let (dloss, dhit, dsum) = (
            gpu.zeros::<f32>(rows)?,
            gpu.zeros::<f32>(rows)?,
            gpu.zeros::<f64>(4)?,
        );
        gpu.softmax_xent(
            dz.view(),
            dl.view(),
            Some(&ind),
            rows,
            classes,
            scale,
            Some(dp.view()),
            Some(dd.view()),
            dloss.view(),
            dhit.view(),
        )?;
        gpu.loss_sum(dloss.view(), dhit.view(), rows, false, dsum.view(), 1)?;
        let (wp, wd, wl, wh) = r::softmax_xent(&z, &labels, rows, classes, scale);
        out.push(check(
            "softmax_xent probs",
            sizes.clone(),
            max_abs_diff(&dp.to_vec()?, &wp),
            1e-6,
        ));
        out.push(check(
            "softmax_xent dlogits",
            sizes.clone(),
            max_abs_diff(&dd.to_vec()?, &wd) / f64::from(scale),
            1e-6,
        ));
        let gl = dloss.to_vec()?;
        let err = gl
            .iter()
            .zip(&wl)
            .map(|(g, w)| (f64::from(*g) - w).abs() / w.abs().max(1.0))
            .fold(0.0, f64::max);
        out.push(check("softmax_xent loss", sizes.clone(), err, 1e-5));
        let gh = dhit.to_vec()?;
        let misses = gh
            .iter()
            .zip(&wh)
            .filter(|(g, w)| (**g == 1.0) != **w)
            .count();
        out.push(check(
            "softmax_xent hits",
            sizes.clone(),
            misses as f64,
            0.0,
        ));
        let s = dsum.to_vec()?;
        let want_l: f64 = gl.iter().map(|&x| f64::from(x)).sum();
        let want_h: f64 = gh.iter().map(|&x| f64::from(x)).sum();
        out.push(check(
            "loss_sum",
            sizes.clone(),
            rel(s[1], want_l).max(rel(s[2], want_h)),
            1e-12,
        ));
        let rz = rng.vec(rows * classes, -1.0, 1.0);
        let (drz, drd) = (gpu.upload(&rz)?, gpu.zeros::<f32>(rows * classes)?);
        gpu.softmax_hvp(dp.view(), drz.view(), rows, classes, scale, drd.view())?;
        let want = r::softmax_hvp(&dp.to_vec()?, &rz, rows, classes, scale);
        out.push(check(
            "softmax_hvp",
            sizes,
            max_abs_diff(&drd.to_vec()?, &want) / f64::from(scale),
            1e-6,
        ));
    }
    Ok(())
}

fn check_reduce(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    let partials = gpu.zeros::<f64>(ADAM_STATS * MAX_REDUCE_BLOCKS as usize)?;
    for n in [1usize, 255, 1025, 200_960, rng.range(1, 3_000_000)] {
        let x = rng.vec(n, -1.0, 1.0);
        let (dx, ds) = (gpu.upload(&x)?, gpu.zeros::<f64>(3)?);
        gpu.sum_sq(dx.view(), partials.view(), ds.view(), 2)?;
        out.push(check(
            "sum_sq",
            format!("n={n}"),
            rel(ds.to_vec()?[2], r::sum_sq(&x)),
            1e-12,
        ));
    }
    for &(rows, dcols, acols) in &[
        (1usize, 1usize, 1usize),
        (256, 10, 256),
        (256, 256, 784),
        (rng.range(1, 400), rng.range(1, 300), rng.range(1, 900)),
    ] {
        let delta = rng.vec(rows * dcols, -0.01, 0.01);
        let a = rng.vec(rows * acols, 0.0, 1.0);
        let (dd, da, tmp, s) = (
            gpu.upload(&delta)?,
            gpu.upload(&a)?,
            gpu.zeros::<f64>(rows)?,
            gpu.zeros::<f64>(2)?,
        );
        gpu.sample_sq_norm_sum(
            dd.view(),
            da.view(),
            rows,
            dcols,
            acols,
            rows as f32,
            tmp.view(),
            s.view(),
            1,
        )?;
        let want = r::sample_sq_norm_sum(&delta, &a, rows, dcols, acols, rows as f32);
        out.push(check(
            "sample_sq_norms",
            format!("rows={rows} dcols={dcols} acols={acols}"),
            rel(s.to_vec()?[1], want),
            1e-9,
        ));
    }
    Ok(())
}

fn check_adam(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    let partials = gpu.zeros::<f64>(ADAM_STATS * MAX_REDUCE_BLOCKS as usize)?;
    let modes = [
        WeightDecay::None,
        WeightDecay::CoupledL2(1e-3_f32),
        WeightDecay::Decoupled(1e-2),
    ];
    for (mi, wd) in modes.into_iter().enumerate() {
        let n = [1usize, 2570, 200_960][mi];
        let adam = validated(AdamConfig {
            weight_decay: wd,
            ..AdamConfig::default()
        })?;
        let cfg = adam.config();
        let mut p = rng.vec(n, -0.1, 0.1);
        let mut m = rng.vec(n, -1e-3, 1e-3);
        let mut v: Vec<f32> = rng.vec(n, 0.0, 1e-5);
        let mut g = rng.vec(n, -1e-2, 1e-2);
        for z in g.iter_mut().step_by(7) {
            *z = 0.0; // parameters with no gradient, like weights on blank pixels
        }
        let (t, lr) = (5u64, 2e-3_f32);
        let (dp, dg, dm, dv) = (
            gpu.upload(&p)?,
            gpu.upload(&g)?,
            gpu.upload(&m)?,
            gpu.upload(&v)?,
        );
        let stats = gpu.zeros::<f64>(1 + ADAM_STATS)?;
        gpu.sum_sq(dg.view(), partials.view(), stats.view(), 0)?;
        let hyper = AdamHyper::new(&adam, lr, t)?;
        gpu.adam_update(
            dp.view(),
            dg.view(),
            dm.view(),
            dv.view(),
            &hyper,
            stats.slice(0, 1)?,
            partials.view(),
            stats.view(),
            1,
        )?;
        let mut want = StepStats::<f32>::new();
        adam.step(lr, t, &mut p, &g, &mut m, &mut v, &mut want)
            .map_err(|error| BackendError::Optimizer { layer: 0, error })?;
        let sizes = format!("n={n} weight_decay={wd:?}");
        let scale = |x: &[f32]| x.iter().map(|v| v.abs()).fold(0.0_f32, f32::max).max(1e-30) as f64;
        let err = (max_abs_diff(&dp.to_vec()?, &p) / scale(&p))
            .max(max_abs_diff(&dm.to_vec()?, &m) / scale(&m))
            .max(max_abs_diff(&dv.to_vec()?, &v) / scale(&v));
        out.push(check("adam_update state", sizes.clone(), err, 1e-6));
        let s = stats.to_vec()?;
        let w = want.cast::<f64>();
        let err = rel(s[0], w.grad_sq)
            .max(rel(s[1], w.sum_v_hat))
            .max(rel(s[2], w.sum_multiplier))
            .max(rel(s[3], w.param_sq))
            .max(rel(s[4], w.update_sq));
        out.push(check("adam_update stats", sizes.clone(), err, 1e-4));
        // The guard: a non-finite |g|^2 leaves everything untouched.
        let before = dp.to_vec()?;
        let guard = gpu.upload(&[f64::NAN])?;
        gpu.adam_update(
            dp.view(),
            dg.view(),
            dm.view(),
            dv.view(),
            &hyper,
            guard.view(),
            partials.view(),
            stats.view(),
            1,
        )?;
        out.push(check(
            "adam_update guard",
            sizes.clone(),
            max_abs_diff(&dp.to_vec()?, &before),
            0.0,
        ));
        let (dout, mut want_d) = (gpu.zeros::<f32>(n)?, vec![0.0_f32; n]);
        gpu.precond_sqrt(dv.view(), hyper.bc2, cfg.eps, dout.view())?;
        preconditioner_sqrt(&v, cfg.beta2, t, cfg.eps, &mut want_d)
            .map_err(|error| BackendError::Optimizer { layer: 0, error })?;
        out.push(check(
            "precond_sqrt",
            sizes,
            max_abs_diff(&dout.to_vec()?, &want_d) / scale(&want_d),
            1e-6,
        ));
    }
    Ok(())
}

fn check_sort(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    let mut scratch = SortScratch::new(gpu, 300_000)?;
    for n in [
        1usize,
        10,
        1000,
        1024,
        1025,
        5000,
        200_704,
        rng.range(2, 300_000),
    ] {
        let theta = rng.vec(n, -0.1, 0.1);
        let theta0 = rng.vec(n, -0.1, 0.1);
        let grad = rng.vec(n, -1e-3, 1e-3);
        let mut sorted0 = theta0.clone();
        sorted0.sort_by(f32::total_cmp);
        let (dt, ds0, dg) = (
            gpu.upload(&theta)?,
            gpu.upload(&sorted0)?,
            gpu.upload(&grad)?,
        );
        gpu.sort(dt.view(), &mut scratch)?;
        let mut want_sorted = theta.clone();
        want_sorted.sort_by(f32::total_cmp);
        let got = gpu.zeros::<f32>(n)?;
        gpu.copy_values(scratch.sorted()?, got.view())?;
        out.push(check(
            "bitonic sort",
            format!("n={n}"),
            max_abs_diff(&got.to_vec()?, &want_sorted),
            0.0,
        ));
        let lambda = 0.3;
        gpu.wasserstein_grad(&scratch, ds0.view(), lambda, dg.view())?;
        let mut want = grad.clone();
        r::wasserstein_grad(&theta, &theta0, lambda, &mut want);
        out.push(check(
            "wasserstein_grad",
            format!("n={n}"),
            max_abs_diff(&dg.to_vec()?, &want),
            1e-7,
        ));
    }
    Ok(())
}

fn check_init(gpu: &Arc<Gpu>, out: &mut Vec<Check>) -> SelftestResult<()> {
    for n in [1usize, 1000, 200_960] {
        let x = gpu.zeros::<f32>(n)?;
        gpu.fill_uniform(x.view(), 42, -0.3, 0.7)?;
        let want: Vec<f32> = (0..n as u64)
            .map(|i| r::uniform_at(42, i, -0.3, 0.7))
            .collect();
        out.push(check(
            "fill_uniform",
            format!("n={n}"),
            max_abs_diff(&x.to_vec()?, &want),
            0.0,
        ));
        gpu.fill_value(x.view(), 2.5)?;
        let err = x
            .to_vec()?
            .iter()
            .map(|&v| f64::from((v - 2.5).abs()))
            .fold(0.0, f64::max);
        out.push(check("fill_value", format!("n={n}"), err, 0.0));
    }
    Ok(())
}

/// MLP-level checks against safestep-engine's [`ReferenceMlp`] (an `f64` MLP whose
/// gradient and Hessian-vector product are themselves tested against finite differences):
/// loss, gradients and every layer's Hessian-vector product, plus the product's symmetry
/// (`u·Hv = v·Hu`) and the preconditioned product against its parts.
fn check_mlp(gpu: &Arc<Gpu>, rng: &mut TestRng, out: &mut Vec<Check>) -> SelftestResult<()> {
    let rel_norm = |a: &[f32], b: &[f64]| {
        let d: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - y).powi(2))
            .sum();
        let n: f64 = b.iter().map(|y| y * y).sum();
        (d / n.max(1e-300)).sqrt()
    };
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum::<f64>()
    };
    for act in [Activation::Relu, Activation::Crelu] {
        let spec = ModelSpec {
            input: 37,
            hidden: vec![29, 17],
            classes: 7,
            activation: act,
            crelu_match_params: false,
            loss: safestep_engine::Loss::CrossEntropy,
            norm: safestep_engine::Norm::None,
        };
        let mut mlp = GpuMlp::new(gpu.clone(), &spec, 3)?;
        let shapes = mlp.shapes().to_vec();
        let n_ex = 90;
        let images = rng.vec(n_ex * spec.input, 0.0, 1.0);
        let labels: Vec<u8> = (0..n_ex)
            .map(|_| rng.range(0, spec.classes - 1) as u8)
            .collect();
        mlp.load_task(&images, &labels)?;
        let batch: Vec<u32> = (0..n_ex as u32).step_by(2).collect();
        let x: Vec<f32> = batch
            .iter()
            .flat_map(|&i| images[i as usize * spec.input..(i as usize + 1) * spec.input].to_vec())
            .collect();
        let y: Vec<u8> = batch.iter().map(|&i| labels[i as usize]).collect();
        let params: Vec<Vec<f64>> = (0..shapes.len())
            .map(|l| {
                mlp.layer_params(l)
                    .map(|p| p.iter().map(|&v| f64::from(v)).collect())
            })
            .collect::<SelftestResult<_>>()?;
        let reference = ReferenceMlp {
            shapes: &shapes,
            activation: act,
            norm: safestep_engine::Norm::None,
            params: &params,
            x: &x,
            y: &y,
        };
        let (want_loss, want_grads) = reference.loss_and_grads();
        let got = mlp.forward_backward(&batch, false)?;
        let sizes = format!("{act:?} 37-29-17-7, batch {}", batch.len());
        out.push(check(
            "mlp loss",
            sizes.clone(),
            rel(got.loss, want_loss),
            1e-6,
        ));
        for (l, want) in want_grads.iter().enumerate() {
            let g = mlp.layer_grad(l)?;
            out.push(check(
                "mlp gradient",
                format!("{sizes} layer {l}"),
                rel_norm(&g, want),
                1e-5,
            ));
            let want_sq: f64 = want.iter().map(|v| v * v).sum();
            out.push(check(
                "mlp mean_grad_sq",
                format!("{sizes} layer {l}"),
                rel(got.layers[l].mean_grad_sq, want_sq),
                1e-5,
            ));
        }
        for (l, shape) in shapes.iter().enumerate() {
            let p = shape.params();
            let u = rng.vec(p, -1.0, 1.0);
            let v = rng.vec(p, -1.0, 1.0);
            let (mut hu, mut hv) = (vec![0.0; p], vec![0.0; p]);
            mlp.hvp(l, &u, &mut hu)?;
            mlp.hvp(l, &v, &mut hv)?;
            let v64: Vec<f64> = v.iter().map(|&t| f64::from(t)).collect();
            let want = reference.hvp(l, &v64);
            out.push(check(
                "mlp hvp",
                format!("{sizes} layer {l}"),
                rel_norm(&hv, &want),
                1e-4,
            ));
            out.push(check(
                "mlp hvp symmetry",
                format!("{sizes} layer {l}"),
                rel(dot(&u, &hv), dot(&v, &hu)),
                1e-4,
            ));
        }
        // The preconditioned product D^½ H D^½ v against its parts, after one Adam step.
        let adam = validated(AdamConfig::default())?;
        mlp.adam_step(&adam, &vec![1e-3; shapes.len()], 1, &Regularizer::default())?;
        mlp.forward_backward(&batch, false)?;
        for (l, shape) in shapes.iter().enumerate() {
            let p = shape.params();
            let v = rng.vec(p, -1.0, 1.0);
            let mut d = vec![0.0; p];
            mlp.precond_sqrt(l, &adam, 1, &mut d)?;
            let dv: Vec<f32> = d.iter().zip(&v).map(|(a, b)| a * b).collect();
            let mut h = vec![0.0; p];
            mlp.hvp(l, &dv, &mut h)?;
            let want: Vec<f64> = d.iter().zip(&h).map(|(a, b)| f64::from(a * b)).collect();
            let mut got = vec![0.0; p];
            mlp.hvp_preconditioned(l, &adam, 1, &v, &mut got)?;
            out.push(check(
                "mlp hvp_preconditioned",
                format!("{sizes} layer {l}"),
                rel_norm(&got, &want),
                1e-5,
            ));
        }
    }
    Ok(())
}

/// Timing of one GEMM layout and shape.
#[derive(Debug, Clone, PartialEq)]
pub struct GemmTiming {
    /// Layout.
    pub layout: GemmLayout,
    /// Shape.
    pub shape: GemmShape,
    /// Mean seconds per call.
    pub seconds: f64,
    /// Achieved TFLOP/s (`2mnk / seconds`).
    pub tflops: f64,
}

/// Times `iters` back-to-back SGEMMs of `shape` (after a warm-up).
///
/// # Errors
/// [`BackendError::Device`] if a launch fails.
pub fn bench_sgemm(
    gpu: &Arc<Gpu>,
    layout: GemmLayout,
    shape: GemmShape,
    iters: usize,
) -> SelftestResult<GemmTiming> {
    gpu.bind()?;
    let mut rng = TestRng::new(9);
    let a = gpu.upload(&rng.vec(shape.m * shape.k, -1.0, 1.0))?;
    let b = gpu.upload(&rng.vec(shape.k * shape.n, -1.0, 1.0))?;
    let c = gpu.zeros::<f32>(shape.m * shape.n)?;
    for _ in 0..iters.clamp(1, 10) {
        gpu.sgemm(layout, shape, 1.0, a.view(), b.view(), 0.0, c.view())?;
    }
    gpu.synchronize("sgemm warm-up")?;
    let start = Instant::now();
    for _ in 0..iters.max(1) {
        gpu.sgemm(layout, shape, 1.0, a.view(), b.view(), 0.0, c.view())?;
    }
    gpu.synchronize("sgemm timing")?;
    let seconds = start.elapsed().as_secs_f64() / iters.max(1) as f64;
    Ok(GemmTiming {
        layout,
        shape,
        seconds,
        tflops: shape.flops() / seconds / 1e12,
    })
}

/// Steady-state training throughput of the MLP on the device.
#[derive(Debug, Clone, PartialEq)]
pub struct MlpTiming {
    /// Minibatch size.
    pub batch: usize,
    /// Timed steps.
    pub steps: usize,
    /// Samples per second, plain Adam (forward, backward, fused Adam step).
    pub adam_samples_per_sec: f64,
    /// Samples per second with the controller's statistics every `interval` steps
    /// (per-sample norms and one Hessian-vector product per layer at each event).
    pub scheduled_samples_per_sec: f64,
    /// Control interval used for `scheduled_samples_per_sec`.
    pub interval: usize,
}

/// Times `steps` training steps of `spec` at batch `batch` on `examples` random examples.
///
/// # Errors
/// [`BackendError::InvalidSpec`] for a bad spec; [`BackendError::Device`] if a launch fails.
pub fn bench_mlp(
    gpu: &Arc<Gpu>,
    spec: &ModelSpec,
    batch: usize,
    examples: usize,
    steps: usize,
    interval: usize,
) -> SelftestResult<MlpTiming> {
    let mut rng = TestRng::new(17);
    let mut mlp = GpuMlp::new(gpu.clone(), spec, 1)?;
    let images = rng.vec(examples * spec.input, 0.0, 1.0);
    let labels: Vec<u8> = (0..examples)
        .map(|_| rng.range(0, spec.classes - 1) as u8)
        .collect();
    mlp.load_task(&images, &labels)?;
    let adam = validated(AdamConfig::default())?;
    let reg = Regularizer::default();
    let counts = mlp.layer_param_counts();
    let lrs = vec![1e-3_f32; counts.len()];
    let batches: Vec<Vec<u32>> = (0..64)
        .map(|_| {
            (0..batch)
                .map(|_| rng.range(0, examples - 1) as u32)
                .collect()
        })
        .collect();
    let vecs: Vec<Vec<f32>> = counts.iter().map(|&n| rng.vec(n, -1.0, 1.0)).collect();
    let mut hv: Vec<Vec<f32>> = vecs.iter().map(|v| vec![0.0; v.len()]).collect();
    let mut t = 0u64;
    let mut run = |mlp: &mut GpuMlp, n: usize, scheduled: bool| -> SelftestResult<f64> {
        let start = Instant::now();
        for s in 0..n {
            t += 1;
            let event = scheduled && s % interval.max(1) == 0;
            mlp.forward_backward(&batches[s % batches.len()], event)?;
            if event {
                for l in 0..vecs.len() {
                    mlp.hvp(l, &vecs[l], &mut hv[l])?;
                }
            }
            mlp.adam_step(&adam, &lrs, t, &reg)?;
        }
        Ok(start.elapsed().as_secs_f64())
    };
    run(&mut mlp, steps.clamp(1, 30), true)?;
    let plain = run(&mut mlp, steps, false)?;
    let scheduled = run(&mut mlp, steps, true)?;
    let samples = (steps * batch) as f64;
    Ok(MlpTiming {
        batch,
        steps,
        adam_samples_per_sec: samples / plain,
        scheduled_samples_per_sec: samples / scheduled,
        interval,
    })
}
