//! Element-wise and row-wise kernels of the CPU engine (everything that is not a GEMM).
//!
//! All loops run over fixed-size row chunks in a fixed order on the calling thread, so
//! their floating-point results do not depend on anything but their inputs.

use crate::spec::Activation;

/// Writes each row of `z` (`rows × out`) as `bias` (the GEMM then accumulates onto it).
pub fn fill_rows(z: &mut [f32], bias: &[f32], rows: usize) {
    let out = bias.len();
    for row in z[..rows * out].chunks_exact_mut(out) {
        row.copy_from_slice(bias);
    }
}

/// Hidden activation: `h = act(z)` with `z` `rows × out` and `h` `rows × (e·out)`.
pub fn activate(act: Activation, z: &[f32], h: &mut [f32], rows: usize, out: usize) {
    match act {
        Activation::Relu => {
            for (hi, &zi) in h[..rows * out].iter_mut().zip(&z[..rows * out]) {
                *hi = zi.max(0.0);
            }
        }
        Activation::Crelu => {
            for (hr, zr) in h[..rows * 2 * out]
                .chunks_exact_mut(2 * out)
                .zip(z[..rows * out].chunks_exact(out))
            {
                let (pos, neg) = hr.split_at_mut(out);
                for ((p, n), &zi) in pos.iter_mut().zip(neg.iter_mut()).zip(zr) {
                    *p = zi.max(0.0);
                    *n = (-zi).max(0.0);
                }
            }
        }
    }
}

/// Tangent (R-operator) of the activation: `rh = act'(z) ⊙ rz` (for CReLU the two halves
/// `[1(z>0)·rz, −1(z<0)·rz]`). Also the form of the backward mask's transpose.
pub fn activate_tangent(
    act: Activation,
    z: &[f32],
    rz: &[f32],
    rh: &mut [f32],
    rows: usize,
    out: usize,
) {
    match act {
        Activation::Relu => {
            for ((r, &zi), &ri) in rh[..rows * out]
                .iter_mut()
                .zip(&z[..rows * out])
                .zip(&rz[..rows * out])
            {
                *r = if zi > 0.0 { ri } else { 0.0 };
            }
        }
        Activation::Crelu => {
            for ((hr, zr), rr) in rh[..rows * 2 * out]
                .chunks_exact_mut(2 * out)
                .zip(z[..rows * out].chunks_exact(out))
                .zip(rz[..rows * out].chunks_exact(out))
            {
                let (pos, neg) = hr.split_at_mut(out);
                for (((p, n), &zi), &ri) in pos.iter_mut().zip(neg.iter_mut()).zip(zr).zip(rr) {
                    *p = if zi > 0.0 { ri } else { 0.0 };
                    *n = if zi < 0.0 { -ri } else { 0.0 };
                }
            }
        }
    }
}

/// Backward through the activation: `d = act'(z)ᵀ · dh`, with `dh` `rows × (e·out)` the
/// gradient with respect to the activation output and `d` `rows × out`.
pub fn activate_backward(
    act: Activation,
    z: &[f32],
    dh: &[f32],
    d: &mut [f32],
    rows: usize,
    out: usize,
) {
    match act {
        Activation::Relu => {
            for ((di, &zi), &gi) in d[..rows * out]
                .iter_mut()
                .zip(&z[..rows * out])
                .zip(&dh[..rows * out])
            {
                *di = if zi > 0.0 { gi } else { 0.0 };
            }
        }
        Activation::Crelu => {
            for ((dr, zr), gr) in d[..rows * out]
                .chunks_exact_mut(out)
                .zip(z[..rows * out].chunks_exact(out))
                .zip(dh[..rows * 2 * out].chunks_exact(2 * out))
            {
                let (gp, gn) = gr.split_at(out);
                for (((di, &zi), &p), &n) in dr.iter_mut().zip(zr).zip(gp).zip(gn) {
                    *di = if zi > 0.0 {
                        p
                    } else if zi < 0.0 {
                        -n
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// LayerNorm without affine parameters, row by row: `u = (z − mean(z))·s` with
/// `s = 1/sqrt(var(z) + ε)` (variance with divisor `out`), `z` and `u` `rows × out`; writes
/// each row's `s` into `inv_std`. Means and variances are summed in `f64`, in order.
pub fn layer_norm(z: &[f32], u: &mut [f32], inv_std: &mut [f32], rows: usize, out: usize) {
    let n = out as f64;
    for ((zr, ur), s) in z[..rows * out]
        .chunks_exact(out)
        .zip(u[..rows * out].chunks_exact_mut(out))
        .zip(&mut inv_std[..rows])
    {
        let mean = zr.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = zr
            .iter()
            .map(|&v| {
                let c = f64::from(v) - mean;
                c * c
            })
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + f64::from(crate::spec::LAYER_NORM_EPS)).sqrt();
        *s = inv as f32;
        for (ui, &zi) in ur.iter_mut().zip(zr) {
            *ui = ((f64::from(zi) - mean) * inv) as f32;
        }
    }
}

/// `Σ_j a_j·b_j / n` of two rows, summed in `f64`.
fn row_mean_product(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum::<f64>()
        / a.len() as f64
}

/// The LayerNorm Jacobian `J = s·(I − 11ᵀ/n − u uᵀ/n)` applied to each row of `g`
/// (`rows × out`): `out = s·(g − mean(g) − u·mean(u ⊙ g))`. `J` is symmetric, so this is
/// both the backward pass (`δ_z = J·∂ℓ/∂u`) and the tangent (`R{u} = J·R{z}`).
pub fn layer_norm_jacobian(
    u: &[f32],
    inv_std: &[f32],
    g: &[f32],
    res: &mut [f32],
    rows: usize,
    out: usize,
) {
    for (((ur, &s), gr), rr) in u[..rows * out]
        .chunks_exact(out)
        .zip(&inv_std[..rows])
        .zip(g[..rows * out].chunks_exact(out))
        .zip(res[..rows * out].chunks_exact_mut(out))
    {
        let mean_g = gr.iter().map(|&v| f64::from(v)).sum::<f64>() / out as f64;
        let mean_ug = row_mean_product(ur, gr);
        let s = f64::from(s);
        for ((r, &gi), &ui) in rr.iter_mut().zip(gr).zip(ur) {
            *r = (s * (f64::from(gi) - mean_g - f64::from(ui) * mean_ug)) as f32;
        }
    }
}

/// The second-order term of LayerNorm's R-backward: the tangent of `J·g` when `z` moves
/// along `R{z}` with `g = ∂ℓ/∂u` held fixed, added to `rd`:
/// `rd −= s·(ρ·δ + m·R{u} + u·mean(R{u} ⊙ g))`, with `ρ = mean(u ⊙ R{z})`,
/// `m = mean(u ⊙ g)` and `δ = J·g` (all `rows × out`). Derivation: `R{s} = −s²ρ`, and
/// `J·g = s·(g − mean(g) − u·m)` with `R{u} = J·R{z}`, `R{m} = mean(R{u} ⊙ g)`.
#[allow(clippy::too_many_arguments)]
pub fn layer_norm_second_order(
    u: &[f32],
    inv_std: &[f32],
    rz: &[f32],
    ru: &[f32],
    g: &[f32],
    delta: &[f32],
    rd: &mut [f32],
    rows: usize,
    out: usize,
) {
    for (r, &s) in inv_std[..rows].iter().enumerate() {
        let at = r * out..(r + 1) * out;
        let (ur, rur, gr) = (&u[at.clone()], &ru[at.clone()], &g[at.clone()]);
        let rho = row_mean_product(ur, &rz[at.clone()]);
        let m = row_mean_product(ur, gr);
        let q = row_mean_product(rur, gr);
        let s = f64::from(s);
        for (((o, &ui), &rui), &di) in rd[at.clone()].iter_mut().zip(ur).zip(rur).zip(&delta[at]) {
            let t = s * (rho * f64::from(di) + m * f64::from(rui) + q * f64::from(ui));
            *o = (f64::from(*o) - t) as f32;
        }
    }
}

/// Softmax cross-entropy on `logits` (`rows × classes`): writes the per-sample deltas
/// `d_i = softmax(z_i) − onehot(y_i)` (the gradient of sample i's loss w.r.t. its logits) and
/// returns (sum of per-sample losses, samples whose first arg-max equals the label).
pub fn softmax_xent(logits: &[f32], labels: &[u8], d: &mut [f32], classes: usize) -> (f64, usize) {
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for ((zr, dr), &y) in logits
        .chunks_exact(classes)
        .zip(d.chunks_exact_mut(classes))
        .zip(labels)
    {
        let (l, c) = xent_row(zr, Some(dr), y as usize);
        loss += l;
        correct += usize::from(c);
    }
    (loss, correct)
}

/// Loss and correctness of one row; optionally writes `softmax − onehot` into `d`.
pub fn xent_row(z: &[f32], d: Option<&mut [f32]>, y: usize) -> (f64, bool) {
    let mut arg = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (j, &v) in z.iter().enumerate() {
        if v > max {
            max = v;
            arg = j;
        }
    }
    let mut sum = 0.0f32;
    match d {
        Some(d) => {
            for (dj, &v) in d.iter_mut().zip(z) {
                let e = (v - max).exp();
                *dj = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for dj in d.iter_mut() {
                *dj *= inv;
            }
            d[y] -= 1.0;
        }
        None => {
            for &v in z {
                sum += (v - max).exp();
            }
        }
    }
    let loss = f64::from(sum).ln() + f64::from(max) - f64::from(z[y]);
    (loss, arg == y)
}

/// Squared error on `outputs` (`rows × width`) against `targets` (same shape): writes the
/// per-sample deltas `d_i = ŷ_i − y_i` (the gradient of `½‖ŷ_i − y_i‖²` w.r.t. the outputs)
/// and returns the sum of the per-sample losses `½‖ŷ_i − y_i‖²`.
pub fn squared_error(outputs: &[f32], targets: &[f32], d: &mut [f32]) -> f64 {
    let mut loss = 0.0f64;
    for ((di, &o), &t) in d.iter_mut().zip(outputs).zip(targets) {
        let e = o - t;
        *di = e;
        loss += f64::from(e) * f64::from(e);
    }
    0.5 * loss
}

/// `½‖ŷ − y‖²` of one row (or of several, summed), in `f64`, without deltas.
pub fn squared_error_row(outputs: &[f32], targets: &[f32]) -> f64 {
    let sum: f64 = outputs
        .iter()
        .zip(targets)
        .map(|(&o, &t)| {
            let e = f64::from(o - t);
            e * e
        })
        .sum();
    0.5 * sum
}

/// Column sums of a row-major `rows × cols` matrix, scaled: `out_j = scale·Σ_i a_ij`.
pub fn column_sums(a: &[f32], rows: usize, cols: usize, scale: f32, out: &mut [f32]) {
    column_range_sums(a, rows, cols, 0, scale, &mut out[..cols]);
}

/// Scaled sums of the columns `[first, first + out.len())` of a row-major `rows × cols`
/// matrix: `out_j = scale·Σ_i a_i,first+j`, each summed over the rows in order (so a range
/// gives the same bits as the whole).
pub fn column_range_sums(
    a: &[f32],
    rows: usize,
    cols: usize,
    first: usize,
    scale: f32,
    out: &mut [f32],
) {
    out.fill(0.0);
    let width = out.len();
    for row in a[..rows * cols].chunks_exact(cols) {
        for (o, &x) in out.iter_mut().zip(&row[first..first + width]) {
            *o += x;
        }
    }
    for o in out.iter_mut() {
        *o *= scale;
    }
}

/// Elements per block of [`sq_norm`].
pub const SQ_NORM_BLOCK: usize = 1024;

/// Lanes of one block's accumulator in [`sq_norm`].
const SQ_NORM_LANES: usize = 8;

/// Blocks whose sums [`sq_norm_blocks`] runs side by side.
pub const SQ_NORM_INTERLEAVE: usize = 4;

/// `Σ x²` of a slice: 8 `f32` lanes over blocks of [`SQ_NORM_BLOCK`], each block's lanes
/// added into `f64` ([`sq_norm_block`]), the blocks' sums added in order.
pub fn sq_norm(x: &[f32]) -> f64 {
    let mut sums = [0.0f64; SQ_NORM_INTERLEAVE];
    let mut total = 0.0f64;
    for group in x.chunks(SQ_NORM_INTERLEAVE * SQ_NORM_BLOCK) {
        let blocks = sq_norm_blocks(group, &mut sums);
        total = sums[..blocks].iter().fold(total, |total, &sum| total + sum);
    }
    total
}

/// [`sq_norm_block`] of each block of [`SQ_NORM_BLOCK`] elements in `x` (the last may be
/// shorter) into `sums`, returning how many there were. Whole groups of four blocks run
/// side by side: one block's sum is a chain of dependent additions, so four chains keep
/// the adder busy where one would wait on its own latency. Each block's lanes are summed
/// exactly as [`sq_norm_block`] sums them: the same bits.
///
/// # Panics
/// If `x` holds more blocks than `sums` (an engine invariant).
pub fn sq_norm_blocks(x: &[f32], sums: &mut [f64]) -> usize {
    let blocks = x.len().div_ceil(SQ_NORM_BLOCK);
    assert!(blocks <= sums.len(), "sq_norm_blocks: too many blocks");
    let (groups, rest) = x.as_chunks::<{ SQ_NORM_INTERLEAVE * SQ_NORM_BLOCK }>();
    for (group, sums) in groups.iter().zip(sums.chunks_exact_mut(SQ_NORM_INTERLEAVE)) {
        let (blocks, _) = group.as_chunks::<SQ_NORM_BLOCK>();
        let lanes = |b: usize| blocks[b].as_chunks::<SQ_NORM_LANES>().0;
        let (l0, l1, l2, l3) = (lanes(0), lanes(1), lanes(2), lanes(3));
        let mut acc = [Lanes::ZERO; SQ_NORM_INTERLEAVE];
        for (((x0, x1), x2), x3) in l0.iter().zip(l1).zip(l2).zip(l3) {
            acc[0] = acc[0].add_squares(x0);
            acc[1] = acc[1].add_squares(x1);
            acc[2] = acc[2].add_squares(x2);
            acc[3] = acc[3].add_squares(x3);
        }
        for (sum, acc) in sums.iter_mut().zip(acc) {
            *sum = acc.lanes().iter().map(|&a| f64::from(a)).sum::<f64>();
        }
    }
    let done = groups.len() * SQ_NORM_INTERLEAVE;
    for (sum, block) in sums[done..].iter_mut().zip(rest.chunks(SQ_NORM_BLOCK)) {
        *sum = sq_norm_block(block);
    }
    blocks
}

/// One block's [`SQ_NORM_LANES`] accumulators of [`sq_norm_blocks`], as two SSE vectors on
/// x86-64. LLVM vectorised the plain array version across blocks instead of along them
/// (shuffling pairs of lanes from two blocks together), which cost more than it saved.
#[derive(Clone, Copy)]
struct Lanes(
    #[cfg(target_arch = "x86_64")] [std::arch::x86_64::__m128; 2],
    #[cfg(not(target_arch = "x86_64"))] [f32; SQ_NORM_LANES],
);

impl Lanes {
    // SAFETY: `__m128` is four `f32` with no padding and no invalid bit patterns
    // (`_mm_setzero_ps` is not a `const fn`).
    #[cfg(target_arch = "x86_64")]
    const ZERO: Lanes =
        Lanes([unsafe { std::mem::transmute::<[f32; 4], std::arch::x86_64::__m128>([0.0; 4]) }; 2]);
    #[cfg(not(target_arch = "x86_64"))]
    const ZERO: Lanes = Lanes([0.0; SQ_NORM_LANES]);

    /// `lane[j] += x[j]²`: one multiply and one add per lane, as [`sq_norm_block`] does.
    #[inline(always)]
    fn add_squares(self, x: &[f32; SQ_NORM_LANES]) -> Lanes {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_mm_add_ps, _mm_loadu_ps, _mm_mul_ps};
            // SAFETY: `x` holds 8 `f32`, so both unaligned 4-lane loads read inside it; SSE
            // is part of every x86-64 CPU.
            unsafe {
                let (lo, hi) = (_mm_loadu_ps(x.as_ptr()), _mm_loadu_ps(x.as_ptr().add(4)));
                Lanes([
                    _mm_add_ps(self.0[0], _mm_mul_ps(lo, lo)),
                    _mm_add_ps(self.0[1], _mm_mul_ps(hi, hi)),
                ])
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let mut acc = self.0;
            for (a, &x) in acc.iter_mut().zip(x) {
                *a += x * x;
            }
            Lanes(acc)
        }
    }

    /// The lanes in order.
    fn lanes(self) -> [f32; SQ_NORM_LANES] {
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: two `__m128` are eight `f32` in lane order, with no padding.
            unsafe {
                std::mem::transmute::<[std::arch::x86_64::__m128; 2], [f32; SQ_NORM_LANES]>(self.0)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.0
        }
    }
}

/// One block's part of [`sq_norm`].
pub fn sq_norm_block(block: &[f32]) -> f64 {
    let mut acc = [0.0f32; SQ_NORM_LANES];
    let body = block.chunks_exact(SQ_NORM_LANES);
    let rest = body.remainder();
    for c in body {
        for j in 0..SQ_NORM_LANES {
            acc[j] += c[j] * c[j];
        }
    }
    for (j, &v) in rest.iter().enumerate() {
        acc[j] += v * v;
    }
    acc.iter().map(|&a| f64::from(a)).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xent_row_matches_f64_reference() {
        let z = [1.0f32, -2.0, 0.5, 3.0];
        let mut d = [0.0f32; 4];
        let (l, ok) = xent_row(&z, Some(&mut d), 2);
        let zs: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let lse = zs.iter().map(|v| v.exp()).sum::<f64>().ln();
        assert!((l - (lse - zs[2])).abs() < 1e-6);
        assert!(!ok);
        for j in 0..4 {
            let p = (zs[j] - lse).exp() - if j == 2 { 1.0 } else { 0.0 };
            assert!((d[j] as f64 - p).abs() < 1e-6);
        }
        assert!(xent_row(&z, None, 3).1);
    }

    #[test]
    fn crelu_backward_is_transpose_of_tangent() {
        // <act'(z) r, g> == <r, act'(z)^T g> for random r, g.
        let z = [0.5f32, -1.0, 0.0, 2.0, -0.1, 0.3];
        let r = [1.0f32, 2.0, -3.0, 0.5, 0.25, -1.5];
        let g: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        for act in [Activation::Relu, Activation::Crelu] {
            let e = act.expansion();
            let mut rh = vec![0.0f32; 6 * e];
            activate_tangent(act, &z, &r, &mut rh, 2, 3);
            let mut d = vec![0.0f32; 6];
            activate_backward(act, &z, &g[..6 * e], &mut d, 2, 3);
            let lhs: f32 = rh.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f32 = r.iter().zip(&d).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-5, "{act}");
        }
    }

    #[test]
    fn layer_norm_by_hand() {
        // Row 1: mean 2.5, variance (2.25 + 0.25 + 0.25 + 2.25)/4 = 1.25.
        // Row 2: constant, so u = 0 (variance 0: s = 1/sqrt(ε)).
        let z = [1.0f32, 2.0, 3.0, 4.0, 7.0, 7.0, 7.0, 7.0];
        let (mut u, mut s) = ([0.0f32; 8], [0.0f32; 2]);
        layer_norm(&z, &mut u, &mut s, 2, 4);
        let inv = 1.0 / (1.25f64 + 1e-5).sqrt();
        for (j, &zj) in z[..4].iter().enumerate() {
            assert!(
                (u[j] as f64 - (zj as f64 - 2.5) * inv).abs() < 1e-6,
                "{u:?}"
            );
        }
        assert!((s[0] as f64 - inv).abs() < 1e-6);
        assert_eq!(&u[4..], &[0.0; 4]);
        assert!((s[1] as f64 - 1.0 / 1e-5f64.sqrt()).abs() < 1e-2);
        // Per row: mean 0 and (biased) variance 1 − ε·s², i.e. 1 up to ε.
        let row = &u[..4];
        let mean: f64 = row.iter().map(|&v| v as f64).sum::<f64>() / 4.0;
        let var: f64 = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 4.0;
        assert!(
            mean.abs() < 1e-7 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
    }

    #[test]
    fn layer_norm_jacobian_is_symmetric_and_matches_differences() {
        let z: Vec<f32> = (0..12)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let r: Vec<f32> = (0..12).map(|i| (i as f32 * 0.9).cos()).collect();
        let g: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        let (rows, out) = (2, 6);
        let (mut u, mut s) = (vec![0.0f32; 12], vec![0.0f32; 2]);
        layer_norm(&z, &mut u, &mut s, rows, out);
        let (mut jr, mut jg) = (vec![0.0f32; 12], vec![0.0f32; 12]);
        layer_norm_jacobian(&u, &s, &r, &mut jr, rows, out);
        layer_norm_jacobian(&u, &s, &g, &mut jg, rows, out);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        assert!((dot(&jr, &g) - dot(&r, &jg)).abs() < 1e-4);
        // J·r against central differences of LN along r.
        let h = 1e-3f32;
        let at = |sign: f32| {
            let zs: Vec<f32> = z.iter().zip(&r).map(|(a, b)| a + sign * h * b).collect();
            let (mut u, mut s) = (vec![0.0f32; 12], vec![0.0f32; 2]);
            layer_norm(&zs, &mut u, &mut s, rows, out);
            u
        };
        let (up, um) = (at(1.0), at(-1.0));
        for j in 0..12 {
            let fd = (up[j] - um[j]) / (2.0 * h);
            assert!((fd - jr[j]).abs() < 2e-3, "[{j}] {fd} vs {}", jr[j]);
        }
    }

    #[test]
    fn squared_error_deltas_and_loss() {
        let (o, t) = ([1.0f32, -2.0, 0.5, 3.0], [0.5f32, -1.0, 0.5, 1.0]);
        let mut d = [0.0f32; 4];
        let loss = squared_error(&o, &t, &mut d);
        assert_eq!(d, [0.5, -1.0, 0.0, 2.0]);
        assert_eq!(loss, 0.5 * (0.25 + 1.0 + 0.0 + 4.0));
        assert_eq!(squared_error_row(&o, &t), loss);
    }

    /// The interleaved block sums are the one-block-at-a-time sums, bit for bit, at every
    /// length around the block and group edges.
    #[test]
    fn sq_norm_blocks_sum_as_one_block_at_a_time() {
        let x: Vec<f32> = (0..5 * 4096 + 77)
            .map(|i| (((i * 2_654_435_761usize) % 2001) as f32 - 1000.0) * 1.3e-3)
            .collect();
        let mut sums = vec![0.0f64; 32];
        for len in [
            0,
            1,
            9,
            1023,
            1024,
            1025,
            4095,
            4096,
            4097,
            8192 + 5,
            5 * 4096 + 77,
        ] {
            let x = &x[x.len() - len..];
            let one_at_a_time: Vec<f64> = x.chunks(SQ_NORM_BLOCK).map(sq_norm_block).collect();
            let blocks = sq_norm_blocks(x, &mut sums);
            assert_eq!(blocks, one_at_a_time.len(), "length {len}");
            for (b, (got, want)) in sums.iter().zip(&one_at_a_time).enumerate() {
                assert_eq!(got.to_bits(), want.to_bits(), "length {len}, block {b}");
            }
            let total = one_at_a_time.iter().fold(0.0f64, |t, &s| t + s);
            assert_eq!(sq_norm(x).to_bits(), total.to_bits(), "length {len}");
        }
    }

    #[test]
    fn sq_norm_matches_f64() {
        let x: Vec<f32> = (0..3001)
            .map(|i| ((i * 7919) % 1000) as f32 / 999.0 - 0.5)
            .collect();
        let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        assert!((sq_norm(&x) - want).abs() < 1e-6 * want);
    }
}
