//! Launch wrappers of `gpu/kernels/activation.cu`: the minibatch gather, bias plus ReLU /
//! CReLU forward, their backward and forward-mode (R-operator) products, and column sums
//! (bias gradients).

use safestep_engine::Activation;

use crate::device::{arg, Family, Gpu, View};
use crate::error::{GpuError, GpuResult};
use crate::shape::{check_at_least, THREADS};

use super::{elementwise_grid, Indices};

impl Gpu {
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
        act: Option<Activation>,
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
                let name = if act == Activation::Relu {
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
        act: Activation,
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
        act: Activation,
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
        act: Activation,
        relu: &'static str,
        crelu: &'static str,
        z: View<f32>,
        input: View<f32>,
        rows: usize,
        cols: usize,
        out: View<f32>,
        forward: bool,
    ) -> GpuResult<()> {
        let name = if act == Activation::Relu { relu } else { crelu };
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
}
