//! Safe launch wrappers: one function per kernel. Each checks every size and buffer length
//! it passes to the device before the `unsafe` launch, and reports a failed launch as
//! [`GpuError::Driver`] naming the kernel and the sizes.

use crate::device::{arg, Family, Gpu, GpuBuffer, View};
use crate::error::{GpuError, GpuResult};
use crate::shape::{
    blocks_for, check_at_least, check_dim, check_exact, reduce_blocks, sort_len, GemmLayout,
    GemmShape, SORT_CHUNK, THREADS,
};
use crate::spec::Act;

/// Warps per block of the one-warp-per-row kernels.
const ROW_THREADS: u32 = 256;

/// Statistics per layer written by [`Gpu::adam_update`] (`kernels/adam.cu`'s `ADAM_STATS`).
pub const ADAM_STATS: usize = 4;

/// Row indices into a data set, validated on the host (`index < bound`) before upload, so
/// the gathers that read through them stay inside the data.
#[derive(Debug)]
pub struct Indices {
    buf: GpuBuffer<u32>,
    len: usize,
    bound: usize,
}

impl Indices {
    /// A buffer for up to `capacity` indices.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation fails.
    pub fn with_capacity(gpu: &Gpu, capacity: usize) -> GpuResult<Indices> {
        Ok(Indices {
            buf: gpu.zeros(capacity)?,
            len: 0,
            bound: 0,
        })
    }

    /// Uploads `idx` after checking every entry is below `bound`.
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] naming the first index out of range;
    /// [`GpuError::Length`] if `idx` exceeds the capacity.
    pub fn set(&mut self, idx: &[u32], bound: usize) -> GpuResult<()> {
        check_at_least("Indices::set", "capacity", idx.len(), self.buf.len())?;
        if let Some((pos, &i)) = idx.iter().enumerate().find(|(_, &i)| i as usize >= bound) {
            return Err(GpuError::InvalidArgument {
                op: "Indices::set",
                what: "index",
                value: format!("{i} at position {pos}"),
                allowed: "below the number of examples",
            });
        }
        self.buf.copy_prefix_from(idx)?;
        self.len = idx.len();
        self.bound = bound;
        Ok(())
    }

    /// Number of indices set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no index is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every index is below this.
    pub fn bound(&self) -> usize {
        self.bound
    }

    fn view(&self) -> View<u32> {
        self.buf.view()
    }
}

/// Scratch for sorting one vector on the device (keys and their original positions),
/// sized for vectors of up to `capacity` elements.
#[derive(Debug)]
pub struct SortScratch {
    keys: GpuBuffer<f32>,
    idx: GpuBuffer<u32>,
    sorted_len: usize,
}

impl SortScratch {
    /// Scratch for vectors of up to `capacity` elements.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation fails.
    pub fn new(gpu: &Gpu, capacity: usize) -> GpuResult<SortScratch> {
        let n = sort_len(capacity);
        Ok(SortScratch {
            keys: gpu.zeros(n)?,
            idx: gpu.zeros(n)?,
            sorted_len: 0,
        })
    }

    /// The sorted values of the last [`Gpu::sort`] (its first `n` keys).
    ///
    /// # Errors
    /// [`GpuError::MissingState`] before any sort.
    pub fn sorted(&self) -> GpuResult<View<f32>> {
        if self.sorted_len == 0 {
            return Err(GpuError::MissingState {
                op: "SortScratch::sorted",
                needs: "Gpu::sort",
            });
        }
        self.keys.slice(0, self.sorted_len)
    }
}

fn elementwise_grid(op: &'static str, n: usize) -> GpuResult<u32> {
    check_dim(op, "elements", n)?;
    blocks_for(op, n, THREADS)
}

fn row_grid(op: &'static str, rows: usize) -> GpuResult<u32> {
    check_dim(op, "rows", rows)?;
    blocks_for(op, rows * 32, ROW_THREADS)
}

impl Gpu {
    /// `C = alpha·op(A)·op(B) + beta·C` (row-major; see [`GemmLayout`]).
    ///
    /// # Errors
    /// [`GpuError::Length`] / [`GpuError::TooLarge`] from [`GemmShape::check`];
    /// [`GpuError::Driver`] if the launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        layout: GemmLayout,
        shape: GemmShape,
        alpha: f32,
        a: View<f32>,
        b: View<f32>,
        beta: f32,
        c: View<f32>,
    ) -> GpuResult<()> {
        shape.check("sgemm", a.len(), b.len(), c.len())?;
        if shape.m == 0 || shape.n == 0 {
            return Ok(());
        }
        let plan = shape.plan(self.multiprocessors());
        let name = match (layout, plan.tile) {
            (GemmLayout::NN, 64) => "sgemm_nn_64",
            (GemmLayout::NT, 64) => "sgemm_nt_64",
            (GemmLayout::TN, 64) => "sgemm_tn_64",
            (GemmLayout::NN, _) => "sgemm_nn_32",
            (GemmLayout::NT, _) => "sgemm_nt_32",
            (GemmLayout::TN, _) => "sgemm_tn_32",
        };
        let threads: u32 = if plan.tile == 64 { 256 } else { 128 };
        let mn = shape.m * shape.n;
        let sizes = || {
            format!(
                "{} {} tile={} splits={}",
                layout.as_str(),
                shape.describe(),
                plan.tile,
                plan.splits
            )
        };
        let (m, n, k, kchunk) = (
            shape.m as i32,
            shape.n as i32,
            shape.k as i32,
            plan.kchunk as i32,
        );
        let (pa, pb) = (a.ptr(), b.ptr());
        if plan.splits == 1 {
            let pc = c.ptr();
            let args = [
                arg(&m),
                arg(&n),
                arg(&k),
                arg(&kchunk),
                arg(&alpha),
                arg(&pa),
                arg(&pb),
                arg(&beta),
                arg(&pc),
            ];
            // SAFETY: the argument list matches `SAFESTEP_GEMM`'s signature; shape.check
            // proved A, B and C hold m·k, k·n and m·n elements, all the kernel touches with
            // one k slice (gridDim.z = 1).
            return unsafe { self.launch(Family::Gemm, name, plan.grid, threads, &args, sizes) };
        }
        let work = self.splitk_workspace(plan.splits * mn)?;
        let (one, zero) = (1.0_f32, 0.0_f32);
        let pw = work.ptr();
        let args = [
            arg(&m),
            arg(&n),
            arg(&k),
            arg(&kchunk),
            arg(&one),
            arg(&pa),
            arg(&pb),
            arg(&zero),
            arg(&pw),
        ];
        // SAFETY: as above, except that block z writes the z-th m·n slice of the workspace,
        // which holds splits·m·n elements (checked by splitk_workspace).
        unsafe { self.launch(Family::Gemm, name, plan.grid, threads, &args, sizes)? };
        let grid = elementwise_grid("sgemm_splitk_reduce", mn)?;
        let (splits, mn64, pc) = (plan.splits as i32, mn as i64, c.ptr());
        let args = [
            arg(&pw),
            arg(&splits),
            arg(&mn64),
            arg(&alpha),
            arg(&beta),
            arg(&pc),
        ];
        // SAFETY: signature (parts, splits, mn, alpha, beta, C); reads splits·mn workspace
        // elements, writes mn elements of C (checked).
        unsafe {
            self.launch(
                Family::Gemm,
                "sgemm_splitk_reduce",
                grid,
                THREADS,
                &args,
                sizes,
            )
        }
    }

    /// `x[r, :] = images[idx[r], :]` for the `idx.len()` rows of a minibatch.
    ///
    /// # Errors
    /// [`GpuError::Length`] if `images` holds fewer than `idx.bound()` rows of `cols` or `x`
    /// fewer than `idx.len()` rows; [`GpuError::Driver`] if the launch fails.
    pub fn gather_rows(
        &self,
        images: View<f32>,
        idx: &Indices,
        cols: usize,
        x: View<f32>,
    ) -> GpuResult<()> {
        let rows = idx.len();
        check_at_least("gather_rows", "images", idx.bound() * cols, images.len())?;
        check_at_least("gather_rows", "x", rows * cols, x.len())?;
        let grid = elementwise_grid("gather_rows", rows * cols)?;
        let (r, c) = (rows as i32, cols as i32);
        let (pi, pidx, px) = (images.ptr(), idx.view().ptr(), x.ptr());
        let args = [arg(&pi), arg(&pidx), arg(&r), arg(&c), arg(&px)];
        // SAFETY: signature (images, idx, rows, cols, x); every idx < bound so reads stay in
        // images (bound·cols elements checked); writes rows·cols elements of x (checked).
        unsafe {
            self.launch(
                Family::Activation,
                "gather_rows",
                grid,
                THREADS,
                &args,
                || format!("rows={rows} cols={cols}"),
            )
        }
    }

    /// `z += b` per row, then the hidden activation into `a` (`act = Some`), or nothing
    /// more for the logits (`act = None`, `a` ignored).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short `z` (`rows·cols`), `b` (`cols`) or `a`
    /// (`rows·cols·expansion`); [`GpuError::Driver`] if the launch fails.
    pub fn bias_act_forward(
        &self,
        z: View<f32>,
        b: View<f32>,
        rows: usize,
        cols: usize,
        act: Option<Act>,
        a: Option<View<f32>>,
    ) -> GpuResult<()> {
        let op = "bias_act_forward";
        check_at_least(op, "z", rows * cols, z.len())?;
        check_at_least(op, "b", cols, b.len())?;
        let grid = elementwise_grid(op, rows * cols)?;
        let (r, c) = (rows as i32, cols as i32);
        let (pz, pb) = (z.ptr(), b.ptr());
        let sizes = || format!("rows={rows} cols={cols} act={act:?}");
        match act {
            None => {
                let args = [arg(&pz), arg(&pb), arg(&r), arg(&c)];
                // SAFETY: signature (z, b, rows, cols); z has rows·cols, b has cols elements.
                unsafe {
                    self.launch(
                        Family::Activation,
                        "bias_forward",
                        grid,
                        THREADS,
                        &args,
                        sizes,
                    )
                }
            }
            Some(act) => {
                let a = a.ok_or(GpuError::MissingState {
                    op,
                    needs: "an output view for the activation",
                })?;
                check_at_least(op, "a", rows * cols * act.expansion(), a.len())?;
                let pa = a.ptr();
                let args = [arg(&pz), arg(&pb), arg(&r), arg(&c), arg(&pa)];
                let name = if act == Act::Relu {
                    "bias_relu_forward"
                } else {
                    "bias_crelu_forward"
                };
                // SAFETY: signature (z, b, rows, cols, a); a has rows·cols·expansion elements.
                unsafe { self.launch(Family::Activation, name, grid, THREADS, &args, sizes) }
            }
        }
    }

    /// Backward of the hidden activation: `dz` (`rows × cols`) from `da`
    /// (`rows × cols·expansion`) at pre-activations `z`. `dz` may alias `da` for ReLU.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn act_backward(
        &self,
        act: Act,
        z: View<f32>,
        da: View<f32>,
        rows: usize,
        cols: usize,
        dz: View<f32>,
    ) -> GpuResult<()> {
        self.act_pair(
            act,
            "relu_backward",
            "crelu_backward",
            z,
            da,
            rows,
            cols,
            dz,
            false,
        )
    }

    /// Forward-mode product of the hidden activation: `ra = act'(z)·rz` (`ra` is
    /// `rows × cols·expansion`).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn act_jvp(
        &self,
        act: Act,
        z: View<f32>,
        rz: View<f32>,
        rows: usize,
        cols: usize,
        ra: View<f32>,
    ) -> GpuResult<()> {
        self.act_pair(act, "relu_jvp", "crelu_jvp", z, rz, rows, cols, ra, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn act_pair(
        &self,
        act: Act,
        relu: &'static str,
        crelu: &'static str,
        z: View<f32>,
        input: View<f32>,
        rows: usize,
        cols: usize,
        out: View<f32>,
        forward: bool,
    ) -> GpuResult<()> {
        let name = if act == Act::Relu { relu } else { crelu };
        let wide = rows * cols * act.expansion();
        check_at_least(name, "z", rows * cols, z.len())?;
        check_at_least(
            name,
            "input",
            if forward { rows * cols } else { wide },
            input.len(),
        )?;
        check_at_least(
            name,
            "output",
            if forward { wide } else { rows * cols },
            out.len(),
        )?;
        let grid = elementwise_grid(name, rows * cols)?;
        let (r, c) = (rows as i32, cols as i32);
        let (pz, pi, po) = (z.ptr(), input.ptr(), out.ptr());
        let args = [arg(&pz), arg(&pi), arg(&r), arg(&c), arg(&po)];
        // SAFETY: signature (z, in, rows, cols, out); lengths checked above for the
        // narrow (rows·cols) and wide (rows·cols·expansion) sides.
        unsafe {
            self.launch(Family::Activation, name, grid, THREADS, &args, || {
                format!("rows={rows} cols={cols}")
            })
        }
    }

    /// `out[c] = Σ_r d[r, c]` (the bias gradient).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn col_sum(&self, d: View<f32>, rows: usize, cols: usize, out: View<f32>) -> GpuResult<()> {
        check_at_least("col_sum", "d", rows * cols, d.len())?;
        check_at_least("col_sum", "out", cols, out.len())?;
        let grid = elementwise_grid("col_sum", cols)?;
        let (r, c) = (rows as i32, cols as i32);
        let (pd, po) = (d.ptr(), out.ptr());
        let args = [arg(&pd), arg(&r), arg(&c), arg(&po)];
        // SAFETY: signature (d, rows, cols, out); d has rows·cols, out has cols elements.
        unsafe {
            self.launch(Family::Activation, "col_sum", grid, THREADS, &args, || {
                format!("rows={rows} cols={cols}")
            })
        }
    }

    /// Softmax cross-entropy of `rows` logit rows: per-row loss and hit (arg-max equals the
    /// label), and optionally the probabilities and `dlogits = (p − onehot)·scale`.
    /// Labels are `labels[idx[r]]` with `idx`, else `labels[r]`.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer (including `labels` shorter than the
    /// indices' bound); [`GpuError::Driver`] if the launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_xent(
        &self,
        logits: View<f32>,
        labels: View<u8>,
        idx: Option<&Indices>,
        rows: usize,
        classes: usize,
        scale: f32,
        probs: Option<View<f32>>,
        dlogits: Option<View<f32>>,
        loss: View<f32>,
        hit: View<f32>,
    ) -> GpuResult<()> {
        let op = "softmax_xent";
        check_at_least(op, "logits", rows * classes, logits.len())?;
        match idx {
            Some(i) => {
                check_exact(op, "indices", rows, i.len())?;
                check_at_least(op, "labels", i.bound(), labels.len())?;
            }
            None => check_at_least(op, "labels", rows, labels.len())?,
        }
        for (what, v) in [("probs", probs), ("dlogits", dlogits)] {
            if let Some(v) = v {
                check_at_least(op, what, rows * classes, v.len())?;
            }
        }
        check_at_least(op, "loss", rows, loss.len())?;
        check_at_least(op, "hit", rows, hit.len())?;
        let grid = row_grid(op, rows)?;
        let (r, c) = (rows as i32, classes as i32);
        let null = cust::memory::DevicePointer::<f32>::null();
        let (pl, plab) = (logits.ptr(), labels.ptr());
        let pidx = idx
            .map(|i| i.view().ptr())
            .unwrap_or_else(cust::memory::DevicePointer::null);
        let pp = probs.map(|v| v.ptr()).unwrap_or(null);
        let pd = dlogits.map(|v| v.ptr()).unwrap_or(null);
        let (ploss, phit) = (loss.ptr(), hit.ptr());
        let args = [
            arg(&pl),
            arg(&plab),
            arg(&pidx),
            arg(&r),
            arg(&c),
            arg(&scale),
            arg(&pp),
            arg(&pd),
            arg(&ploss),
            arg(&phit),
        ];
        // SAFETY: signature (logits, labels, idx, rows, classes, scale, probs, dlogits, loss,
        // hit); null probs/dlogits are skipped by the kernel; label reads stay below the
        // checked bound.
        unsafe {
            self.launch(Family::Loss, op, grid, ROW_THREADS, &args, || {
                format!("rows={rows} classes={classes}")
            })
        }
    }

    /// `out[slot] (+)= Σ loss`, `out[slot+1] (+)= Σ hit` over `rows` rows (one block,
    /// fixed order); `accumulate = false` overwrites.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn loss_sum(
        &self,
        loss: View<f32>,
        hit: View<f32>,
        rows: usize,
        accumulate: bool,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        check_at_least("loss_sum", "loss", rows, loss.len())?;
        check_at_least("loss_sum", "hit", rows, hit.len())?;
        check_at_least("loss_sum", "out", slot + 2, out.len())?;
        check_dim("loss_sum", "rows", rows)?;
        let (r, acc, s) = (rows as i32, accumulate as i32, slot as i32);
        let (pl, ph, po) = (loss.ptr(), hit.ptr(), out.ptr());
        let args = [arg(&pl), arg(&ph), arg(&r), arg(&acc), arg(&po), arg(&s)];
        // SAFETY: signature (loss, hit, rows, accumulate, out, slot); lengths checked.
        unsafe {
            self.launch(Family::Loss, "loss_sum", 1u32, THREADS, &args, || {
                format!("rows={rows} slot={slot}")
            })
        }
    }

    /// `rd = (p ⊙ rz − p·(p·rz))·scale` per row: the logit Hessian of the cross-entropy
    /// times `rz`.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn softmax_hvp(
        &self,
        probs: View<f32>,
        rz: View<f32>,
        rows: usize,
        classes: usize,
        scale: f32,
        rd: View<f32>,
    ) -> GpuResult<()> {
        for (what, v) in [("probs", probs), ("rz", rz), ("rd", rd)] {
            check_at_least("softmax_hvp", what, rows * classes, v.len())?;
        }
        let grid = row_grid("softmax_hvp", rows)?;
        let (r, c) = (rows as i32, classes as i32);
        let (pp, pr, pd) = (probs.ptr(), rz.ptr(), rd.ptr());
        let args = [arg(&pp), arg(&pr), arg(&r), arg(&c), arg(&scale), arg(&pd)];
        // SAFETY: signature (probs, rz, rows, classes, scale, rd); lengths checked.
        unsafe {
            self.launch(
                Family::Loss,
                "softmax_hvp",
                grid,
                ROW_THREADS,
                &args,
                || format!("rows={rows} classes={classes}"),
            )
        }
    }

    /// `out[slot] = Σ x_i²` (in `f64`, deterministic), using `partials` as scratch (at
    /// least [`crate::shape::MAX_REDUCE_BLOCKS`]·[`ADAM_STATS`] values).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if a launch fails.
    pub fn sum_sq(
        &self,
        x: View<f32>,
        partials: View<f64>,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        let n = x.len();
        let blocks = reduce_blocks(n);
        check_at_least(
            "sum_sq_partials",
            "partials",
            blocks as usize,
            partials.len(),
        )?;
        let nn = n as i64;
        let (px, pp) = (x.ptr(), partials.ptr());
        let args = [arg(&px), arg(&nn), arg(&pp)];
        // SAFETY: signature (x, n, partials); reads n elements of x, writes `blocks` partials.
        unsafe {
            self.launch(
                Family::Reduce,
                "sum_sq_partials",
                blocks,
                THREADS,
                &args,
                || format!("n={n} blocks={blocks}"),
            )?;
        }
        self.sum_partials(partials, blocks as usize, 1, out, slot)
    }

    /// `out[slot + v] = Σ_{i<n} partials[v·n + i]` for `v < values` (one block per value).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn sum_partials(
        &self,
        partials: View<f64>,
        n: usize,
        values: usize,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        check_at_least("sum_partials", "partials", n * values, partials.len())?;
        check_at_least("sum_partials", "out", slot + values, out.len())?;
        check_dim("sum_partials", "n", n)?;
        let (nn, s) = (n as i32, slot as i32);
        let (pp, po) = (partials.ptr(), out.ptr());
        let args = [arg(&pp), arg(&nn), arg(&po), arg(&s)];
        // SAFETY: signature (partials, n, out, slot); grid = values blocks, each reads n
        // partials and writes out[slot + v]; lengths checked.
        unsafe {
            self.launch(
                Family::Reduce,
                "sum_partials",
                values as u32,
                THREADS,
                &args,
                || format!("n={n} values={values} slot={slot}"),
            )
        }
    }

    /// `out[slot] = Σ_r scale²·‖δ_r‖²·(‖a_r‖² + 1)`: the sum over the batch of per-sample
    /// gradient squared norms of a dense layer (`tmp` holds `rows` doubles of scratch).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if a launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_sq_norm_sum(
        &self,
        delta: View<f32>,
        a: View<f32>,
        rows: usize,
        dcols: usize,
        acols: usize,
        scale: f32,
        tmp: View<f64>,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        let op = "sample_sq_norms";
        check_at_least(op, "delta", rows * dcols, delta.len())?;
        check_at_least(op, "a", rows * acols, a.len())?;
        check_at_least(op, "tmp", rows, tmp.len())?;
        check_dim(op, "dcols", dcols)?;
        check_dim(op, "acols", acols)?;
        let grid = row_grid(op, rows)?;
        let (r, dc, ac) = (rows as i32, dcols as i32, acols as i32);
        let (pd, pa, pt) = (delta.ptr(), a.ptr(), tmp.ptr());
        let args = [
            arg(&pd),
            arg(&pa),
            arg(&r),
            arg(&dc),
            arg(&ac),
            arg(&scale),
            arg(&pt),
        ];
        // SAFETY: signature (delta, a, rows, dcols, acols, scale, out); lengths checked.
        unsafe {
            self.launch(Family::Reduce, op, grid, ROW_THREADS, &args, || {
                format!("rows={rows} dcols={dcols} acols={acols}")
            })?
        };
        self.sum_partials(tmp, rows, 1, out, slot)
    }

    /// One fused Adam step over a layer (`p`, `g`, `m`, `v` of equal length) that also
    /// writes the layer's statistics `Σ v̂`, `Σ multiplier`, `‖θ_new‖²`, `‖Δθ‖²` into
    /// `stats[slot .. slot+4]`. `guard[0]` is a squared gradient norm computed on the device
    /// beforehand: when it is not finite the kernel changes nothing.
    ///
    /// # Errors
    /// [`GpuError::Length`] for mismatched buffers; [`GpuError::Driver`] if a launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn adam_update(
        &self,
        p: View<f32>,
        g: View<f32>,
        m: View<f32>,
        v: View<f32>,
        hyper: &AdamHyper,
        guard: View<f64>,
        partials: View<f64>,
        stats: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        let op = "adam_update";
        check_at_least(op, "guard", 1, guard.len())?;
        let n = p.len();
        for (what, x) in [("g", g), ("m", m), ("v", v)] {
            check_exact(op, what, n, x.len())?;
        }
        let blocks = reduce_blocks(n);
        check_at_least(op, "partials", ADAM_STATS * blocks as usize, partials.len())?;
        check_at_least(op, "stats", slot + ADAM_STATS, stats.len())?;
        let nn = n as i64;
        let (pp, pg, pm, pv, pguard, ppart) = (
            p.ptr(),
            g.ptr(),
            m.ptr(),
            v.ptr(),
            guard.ptr(),
            partials.ptr(),
        );
        let h = hyper;
        let args = [
            arg(&pp),
            arg(&pg),
            arg(&pm),
            arg(&pv),
            arg(&nn),
            arg(&h.lr),
            arg(&h.beta1),
            arg(&h.beta2),
            arg(&h.eps),
            arg(&h.bc1),
            arg(&h.bc2),
            arg(&h.wd_mode),
            arg(&h.wd),
            arg(&pguard),
            arg(&ppart),
        ];
        // SAFETY: signature (p, g, m, v, n, lr, beta1, beta2, eps, bc1, bc2, wd_mode, wd,
        // guard, partials); the four vectors have n elements, guard one, partials
        // ADAM_STATS·blocks (checked).
        unsafe {
            self.launch(Family::Adam, op, blocks, THREADS, &args, || {
                format!("n={n} blocks={blocks}")
            })?
        };
        self.sum_partials(partials, blocks as usize, ADAM_STATS, stats, slot)
    }

    /// `out_i = 1/sqrt(sqrt(v_i/bc2) + eps)`: Adam's `D^½`.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short `out`; [`GpuError::Driver`] if the launch fails.
    pub fn precond_sqrt(&self, v: View<f32>, bc2: f32, eps: f32, out: View<f32>) -> GpuResult<()> {
        let n = v.len();
        check_at_least("precond_sqrt", "out", n, out.len())?;
        let grid = elementwise_grid("precond_sqrt", n)?;
        let nn = n as i64;
        let (pv, po) = (v.ptr(), out.ptr());
        let args = [arg(&pv), arg(&nn), arg(&bc2), arg(&eps), arg(&po)];
        // SAFETY: signature (v, n, bc2, eps, out); n elements each (checked).
        unsafe {
            self.launch(Family::Adam, "precond_sqrt", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }

    /// `y = x ⊙ d` elementwise (`y` may alias `x`).
    ///
    /// # Errors
    /// [`GpuError::Length`] for mismatched lengths; [`GpuError::Driver`] if the launch fails.
    pub fn scale_elementwise(&self, x: View<f32>, d: View<f32>, y: View<f32>) -> GpuResult<()> {
        let n = x.len();
        check_at_least("scale_elementwise", "d", n, d.len())?;
        check_at_least("scale_elementwise", "y", n, y.len())?;
        let grid = elementwise_grid("scale_elementwise", n)?;
        let nn = n as i64;
        let (px, pd, py) = (x.ptr(), d.ptr(), y.ptr());
        let args = [arg(&px), arg(&pd), arg(&nn), arg(&py)];
        // SAFETY: signature (x, d, n, y); n elements each (checked).
        unsafe {
            self.launch(
                Family::Adam,
                "scale_elementwise",
                grid,
                THREADS,
                &args,
                || format!("n={n}"),
            )
        }
    }

    /// Sorts `x` ascending into `scratch` (values, with their original positions; ties by
    /// position).
    ///
    /// # Errors
    /// [`GpuError::Length`] if `x` exceeds the scratch capacity; [`GpuError::Driver`] if a
    /// launch fails.
    pub fn sort(&self, x: View<f32>, scratch: &mut SortScratch) -> GpuResult<()> {
        let n = x.len();
        let total = sort_len(n);
        check_at_least("sort", "scratch", total, scratch.keys.len())?;
        check_dim("sort", "n", total)?;
        let (nn, tt) = (n as i32, total as i32);
        let (px, pk, pi) = (x.ptr(), scratch.keys.view().ptr(), scratch.idx.view().ptr());
        let sizes = || format!("n={n} padded={total}");
        let args = [arg(&px), arg(&nn), arg(&tt), arg(&pk), arg(&pi)];
        let grid = elementwise_grid("sort_prepare", total)?;
        // SAFETY: signature (x, n, N, keys, idx); reads n of x, writes N keys and indices,
        // and the scratch holds at least N (checked).
        unsafe {
            self.launch(
                Family::Wasserstein,
                "sort_prepare",
                grid,
                THREADS,
                &args,
                sizes,
            )?
        };
        let chunks = (total / SORT_CHUNK) as u32;
        let local = |k: i32| -> GpuResult<()> {
            let args = [arg(&pk), arg(&pi), arg(&tt), arg(&k)];
            // SAFETY: signature (keys, idx, N, k); each block sorts its own SORT_CHUNK
            // elements of the N (a multiple of SORT_CHUNK, checked) in shared memory.
            unsafe {
                self.launch(
                    Family::Wasserstein,
                    "bitonic_local",
                    chunks,
                    (SORT_CHUNK / 2) as u32,
                    &args,
                    sizes,
                )
            }
        };
        local(0)?;
        let mut k = 2 * SORT_CHUNK;
        while k <= total {
            let mut j = k / 2;
            while j >= SORT_CHUNK {
                let (jj, kk) = (j as i32, k as i32);
                let args = [arg(&pk), arg(&pi), arg(&tt), arg(&jj), arg(&kk)];
                // SAFETY: signature (keys, idx, N, j, k); threads index i < N and partners
                // i ^ j < N since N is a power of two above j.
                unsafe {
                    self.launch(
                        Family::Wasserstein,
                        "bitonic_global",
                        grid,
                        THREADS,
                        &args,
                        sizes,
                    )?
                };
                j /= 2;
            }
            local(k as i32)?;
            k *= 2;
        }
        scratch.sorted_len = n;
        Ok(())
    }

    /// `grad[pos_r] += coef·(sorted_r − sorted0_r)` for the ranks `r` of the last
    /// [`Gpu::sort`] of θ (`coef = λ` for the Wasserstein penalty `(λ/2)·Σ_r (sorted_r −
    /// sorted0_r)²`).
    ///
    /// # Errors
    /// [`GpuError::Length`] if `sorted0` or `grad` do not match the sorted length;
    /// [`GpuError::MissingState`] before a sort; [`GpuError::Driver`] if the launch fails.
    pub fn wasserstein_grad(
        &self,
        scratch: &SortScratch,
        sorted0: View<f32>,
        coef: f32,
        grad: View<f32>,
    ) -> GpuResult<()> {
        let keys = scratch.sorted()?;
        let n = keys.len();
        check_exact("wasserstein_grad", "sorted0", n, sorted0.len())?;
        check_exact("wasserstein_grad", "grad", n, grad.len())?;
        let grid = elementwise_grid("wasserstein_grad", n)?;
        let nn = n as i32;
        let (pk, pi, ps, pg) = (
            keys.ptr(),
            scratch.idx.view().ptr(),
            sorted0.ptr(),
            grad.ptr(),
        );
        let args = [arg(&pk), arg(&pi), arg(&ps), arg(&nn), arg(&coef), arg(&pg)];
        // SAFETY: signature (keys, idx, sorted0, n, coef, grad); the first n sorted
        // positions are a permutation of 0..n (padding sorts last), so writes stay in grad.
        unsafe {
            self.launch(
                Family::Wasserstein,
                "wasserstein_grad",
                grid,
                THREADS,
                &args,
                || format!("n={n}"),
            )
        }
    }

    /// `x_i = lo + (hi − lo)·u_i` with `u_i` from splitmix64 of `(seed, i)`
    /// ([`crate::reference::uniform_at`]).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the launch fails.
    pub fn fill_uniform(&self, x: View<f32>, seed: u64, lo: f32, hi: f32) -> GpuResult<()> {
        let n = x.len();
        let grid = elementwise_grid("fill_uniform", n)?;
        let nn = n as i64;
        let px = x.ptr();
        let args = [arg(&px), arg(&nn), arg(&seed), arg(&lo), arg(&hi)];
        // SAFETY: signature (x, n, seed, lo, hi); writes n elements of x.
        unsafe {
            self.launch(Family::Init, "fill_uniform", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }

    /// `x_i = value`.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the launch fails.
    pub fn fill_value(&self, x: View<f32>, value: f32) -> GpuResult<()> {
        let n = x.len();
        let grid = elementwise_grid("fill_value", n)?;
        let nn = n as i64;
        let px = x.ptr();
        let args = [arg(&px), arg(&nn), arg(&value)];
        // SAFETY: signature (x, n, value); writes n elements of x.
        unsafe {
            self.launch(Family::Init, "fill_value", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }

    /// `dst = src` (equal lengths).
    ///
    /// # Errors
    /// [`GpuError::Length`] on a mismatch; [`GpuError::Driver`] if the launch fails.
    pub fn copy_values(&self, src: View<f32>, dst: View<f32>) -> GpuResult<()> {
        let n = src.len();
        check_exact("copy_values", "dst", n, dst.len())?;
        let grid = elementwise_grid("copy_values", n)?;
        let nn = n as i64;
        let (ps, pd) = (src.ptr(), dst.ptr());
        let args = [arg(&ps), arg(&nn), arg(&pd)];
        // SAFETY: signature (src, n, dst); n elements each (checked).
        unsafe {
            self.launch(Family::Init, "copy_values", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }
}

/// Adam's hyper-parameters for one layer's fused step, as the kernel takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    /// Learning rate of the layer.
    pub lr: f32,
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// `1 − β1^t`.
    pub bc1: f32,
    /// `1 − β2^t`.
    pub bc2: f32,
    /// 0 none, 1 coupled L2, 2 decoupled (AdamW).
    pub wd_mode: i32,
    /// Weight-decay coefficient λ.
    pub wd: f32,
}

impl AdamHyper {
    /// From safestep-core's [`AdamConfig`](safestep_core::adam::AdamConfig), a learning
    /// rate and the 1-based step `t` (bias corrections computed as core does, in `f32`).
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] for `t = 0`, a negative or non-finite `lr`, or a
    /// configuration core rejects.
    pub fn new(
        cfg: &safestep_core::adam::AdamConfig<f32>,
        lr: f32,
        t: u64,
    ) -> GpuResult<AdamHyper> {
        cfg.validate().map_err(|e| GpuError::InvalidArgument {
            op: "AdamHyper",
            what: "adam config",
            value: e.to_string(),
            allowed: "beta1, beta2 in [0, 1); eps > 0; weight decay >= 0",
        })?;
        if t == 0 {
            return Err(GpuError::InvalidArgument {
                op: "AdamHyper",
                what: "t",
                value: "0".into(),
                allowed: ">= 1 (1-based step)",
            });
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(GpuError::InvalidArgument {
                op: "AdamHyper",
                what: "lr",
                value: lr.to_string(),
                allowed: "finite and >= 0",
            });
        }
        use safestep_core::adam::WeightDecay;
        let (wd_mode, wd) = match cfg.weight_decay {
            WeightDecay::None => (0, 0.0),
            WeightDecay::CoupledL2(l) => (1, l),
            WeightDecay::Decoupled(l) => (2, l),
        };
        Ok(AdamHyper {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            bc1: bias_correction(cfg.beta1, t),
            bc2: bias_correction(cfg.beta2, t),
            wd_mode,
            wd,
        })
    }
}

/// `1 − β^t` in `f32` as safestep-core computes it.
pub fn bias_correction(beta: f32, t: u64) -> f32 {
    let pow = if t <= i32::MAX as u64 {
        beta.powi(t as i32)
    } else {
        beta.powf(t as f32)
    };
    1.0 - pow
}
