//! The device: a CUDA context on one GPU, the stream every launch goes to, the loaded
//! kernel modules, and typed device buffers with checked copies.

use std::ffi::c_void;
use std::sync::Arc;

use cust::context::{Context, CurrentContext};
use cust::device::{Device, DeviceAttribute};
use cust::error::CudaError;
use cust::function::{BlockSize, GridSize};
use cust::memory::{CopyDestination, DeviceBuffer, DeviceCopy, DevicePointer};
use cust::module::Module;
use cust::stream::{Stream, StreamFlags};
use cust::CudaFlags;

use crate::error::{GpuError, GpuResult};
use crate::ptx::{self, KernelFile};
use crate::shape::check_exact;

/// Renders a driver error by name and number (never through the driver's own string
/// table, which is unavailable when the driver library is a stub).
pub(crate) fn code(e: CudaError) -> String {
    format!("{e:?} (CUresult {})", e as u32)
}

/// Maps a driver error of operation `op` to [`GpuError::Driver`] with the sizes involved.
pub(crate) fn driver(
    op: &'static str,
    sizes: impl Into<String>,
) -> impl FnOnce(CudaError) -> GpuError {
    let sizes = sizes.into();
    move |e| GpuError::Driver {
        op,
        sizes,
        code: code(e),
    }
}

/// A kernel handle from a loaded module.
struct RawFunction(cust::sys::CUfunction);

// SAFETY: a CUfunction is an opaque driver handle that the driver allows any thread to use
// (cust marks its own `Function` wrapper Send and Sync likewise); it stays valid while its
// module is loaded, which `Gpu` guarantees by owning the modules.
unsafe impl Send for RawFunction {}
// SAFETY: as above; launching through it needs no exclusive access.
unsafe impl Sync for RawFunction {}

/// Index of a kernel family in [`Gpu`]'s module table (the order of [`ptx::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Gemm = 0,
    Activation = 1,
    Loss = 2,
    Reduce = 3,
    Adam = 4,
    Wasserstein = 5,
    Init = 6,
}

impl Family {
    /// Every family, in the order of [`ptx::ALL`].
    const ALL: [Family; 7] = [
        Family::Gemm,
        Family::Activation,
        Family::Loss,
        Family::Reduce,
        Family::Adam,
        Family::Wasserstein,
        Family::Init,
    ];
}

/// One GPU: context, stream and the kernels, ready to launch.
///
/// Create it once with [`Gpu::new`] and share it (`Arc<Gpu>`) between the buffers' owners.
/// All launches go to one in-order stream, so work is ordered; copies to the host wait for
/// everything queued before them.
pub struct Gpu {
    // Field order matters: modules and the stream are released before the context.
    /// Kernel handles by (family, name), resolved once at load; valid while `modules` lives.
    functions: Vec<(Family, &'static str, RawFunction)>,
    /// Kept loaded for `functions`.
    _modules: Vec<Module>,
    stream: Stream,
    name: String,
    compute_capability: (i32, i32),
    multiprocessors: usize,
    /// Split-K partial products (grown on demand; stream order makes reuse safe).
    workspace: std::sync::Mutex<Option<GpuBuffer<f32>>>,
    context: Context,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("name", &self.name)
            .field("compute_capability", &self.compute_capability)
            .field("multiprocessors", &self.multiprocessors)
            .finish()
    }
}

impl Gpu {
    /// Initialises the driver, opens device 0 (its primary context) and loads every kernel
    /// module.
    ///
    /// # Errors
    /// [`GpuError::NoDevice`] when there is no driver or no device (the message says
    /// which); [`GpuError::Driver`] when a module fails to load (PTX newer than the driver).
    pub fn new() -> GpuResult<Arc<Gpu>> {
        Self::with_ordinal(0)
    }

    /// Like [`Gpu::new`] for device `ordinal`.
    ///
    /// # Errors
    /// As [`Gpu::new`].
    pub fn with_ordinal(ordinal: u32) -> GpuResult<Arc<Gpu>> {
        let no_device = |what: &str, e: CudaError| GpuError::NoDevice {
            reason: format!("{what}: {}", code(e)),
        };
        cust::init(CudaFlags::empty()).map_err(|e| {
            no_device(
                "cuInit failed (no NVIDIA GPU visible, or the NVIDIA driver library libcuda.so.1 \
                 is not installed)",
                e,
            )
        })?;
        let count = Device::num_devices().map_err(|e| no_device("cuDeviceGetCount failed", e))?;
        if ordinal >= count {
            return Err(GpuError::NoDevice {
                reason: format!("device {ordinal} requested, the driver sees {count}"),
            });
        }
        let device = Device::get_device(ordinal).map_err(|e| no_device("cuDeviceGet failed", e))?;
        let context = Context::new(device)
            .map_err(|e| no_device("creating the primary context failed", e))?;
        let name = device
            .name()
            .unwrap_or_else(|_| "unknown CUDA device".to_string());
        let attr = |a| {
            device
                .get_attribute(a)
                .map_err(driver("cuDeviceGetAttribute", format!("{a:?}")))
        };
        let compute_capability = (
            attr(DeviceAttribute::ComputeCapabilityMajor)?,
            attr(DeviceAttribute::ComputeCapabilityMinor)?,
        );
        let multiprocessors = attr(DeviceAttribute::MultiprocessorCount)?.max(1) as usize;
        let stream =
            Stream::new(StreamFlags::DEFAULT, None).map_err(driver("cuStreamCreate", ""))?;
        let mut modules = Vec::with_capacity(ptx::ALL.len());
        let mut functions = Vec::new();
        for (i, file) in ptx::ALL.iter().enumerate() {
            let module = load(file)?;
            for &entry in file.entries {
                let f = module.get_function(entry).map_err(driver(
                    "cuModuleGetFunction",
                    format!("kernels/{}.cu: {entry}", file.name),
                ))?;
                functions.push((Family::ALL[i], entry, RawFunction(f.to_raw())));
            }
            modules.push(module);
        }
        Ok(Arc::new(Gpu {
            functions,
            _modules: modules,
            stream,
            name,
            compute_capability,
            multiprocessors,
            workspace: std::sync::Mutex::new(None),
            context,
        }))
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Compute capability `(major, minor)`.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Number of streaming multiprocessors.
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// Makes this GPU's context current on the calling thread (needed after moving the
    /// owner to another thread; cheap when already current).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the driver refuses.
    pub fn bind(&self) -> GpuResult<()> {
        CurrentContext::set_current(&self.context).map_err(driver("cuCtxSetCurrent", ""))
    }

    /// Waits for all queued work; reports errors of earlier asynchronous launches.
    ///
    /// # Errors
    /// [`GpuError::Driver`] naming `after` (what was queued last).
    pub fn synchronize(&self, after: &'static str) -> GpuResult<()> {
        self.stream
            .synchronize()
            .map_err(driver(after, "synchronize"))
    }

    /// A view of at least `len` floats of split-K workspace (allocated or grown on demand).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation fails.
    pub(crate) fn splitk_workspace(&self, len: usize) -> GpuResult<View<f32>> {
        let mut guard = self
            .workspace
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_ref().is_none_or(|w| w.len() < len) {
            // Freeing the old buffer must not race kernels still reading it.
            self.synchronize("sgemm workspace")?;
            *guard = None;
            *guard = Some(self.zeros(len.next_power_of_two())?);
        }
        match guard.as_ref() {
            Some(w) => w.slice(0, len),
            None => Err(GpuError::MissingState {
                op: "sgemm",
                needs: "a split-K workspace",
            }),
        }
    }

    /// A zero-filled device buffer of `len` elements.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation fails (out of memory).
    pub fn zeros<T: DeviceCopy + cust::memory::bytemuck::Zeroable>(
        &self,
        len: usize,
    ) -> GpuResult<GpuBuffer<T>> {
        let buf =
            DeviceBuffer::zeroed(len.max(1)).map_err(driver("cuMemAlloc", format!("len={len}")))?;
        Ok(GpuBuffer { buf, len })
    }

    /// A device buffer holding a copy of `data`.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation or copy fails.
    pub fn upload<T: DeviceCopy + cust::memory::bytemuck::Zeroable>(
        &self,
        data: &[T],
    ) -> GpuResult<GpuBuffer<T>> {
        let mut b = self.zeros(data.len())?;
        b.copy_from(data)?;
        Ok(b)
    }

    fn function(&self, family: Family, name: &str) -> Option<cust::sys::CUfunction> {
        self.functions
            .iter()
            .find(|(f, n, _)| *f == family && *n == name)
            .map(|(_, _, raw)| raw.0)
    }

    /// Launches `name` from `family` with raw argument pointers.
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number, order and type, every
    /// pointer argument must address device memory large enough for what the kernel touches
    /// given the size arguments, and the pointed-to values must live until this returns.
    pub(crate) unsafe fn launch(
        &self,
        family: Family,
        name: &'static str,
        grid: impl Into<GridSize>,
        block: impl Into<BlockSize>,
        args: &[*mut c_void],
        sizes: impl FnOnce() -> String,
    ) -> GpuResult<()> {
        let Some(f) = self.function(family, name) else {
            return Err(GpuError::Driver {
                op: name,
                sizes: sizes(),
                code: "kernel not among the loaded entry points (ptx.rs lists it?)".to_string(),
            });
        };
        let (grid, block): (GridSize, BlockSize) = (grid.into(), block.into());
        // SAFETY: `f` comes from a module `self` keeps loaded; the launch configuration is
        // plain data; the argument pointers' validity is the caller's contract (above).
        let result = unsafe {
            cust::sys::cuLaunchKernel(
                f,
                grid.x,
                grid.y,
                grid.z,
                block.x,
                block.y,
                block.z,
                0,
                self.stream.as_inner(),
                args.as_ptr() as *mut *mut c_void,
                std::ptr::null_mut(),
            )
        };
        if result == cust::sys::cudaError_enum::CUDA_SUCCESS {
            Ok(())
        } else {
            Err(GpuError::Driver {
                op: name,
                sizes: sizes(),
                code: format!("{result:?} (CUresult {})", result as u32),
            })
        }
    }
}

fn load(file: &KernelFile) -> GpuResult<Module> {
    Module::from_ptx(file.ptx, &[]).map_err(|e| GpuError::Driver {
        op: "cuModuleLoadData",
        sizes: format!("kernels/{}.cu, PTX for {}", file.name, ptx::ARCH),
        code: code(e),
    })
}

/// Pointer to a kernel argument, for [`Gpu::launch`].
pub(crate) fn arg<T>(x: &T) -> *mut c_void {
    x as *const T as *mut c_void
}

/// A typed buffer in device memory with its element count.
pub struct GpuBuffer<T: DeviceCopy> {
    buf: DeviceBuffer<T>,
    len: usize,
}

impl<T: DeviceCopy> std::fmt::Debug for GpuBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuBuffer<{}>[{}]", std::any::type_name::<T>(), self.len)
    }
}

impl<T: DeviceCopy> GpuBuffer<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The whole buffer as a [`View`].
    pub fn view(&self) -> View<T> {
        View {
            ptr: self.buf.as_device_ptr(),
            len: self.len,
        }
    }

    /// Elements `offset .. offset + len` as a [`View`].
    ///
    /// # Errors
    /// [`GpuError::Length`] if the range does not fit.
    pub fn slice(&self, offset: usize, len: usize) -> GpuResult<View<T>> {
        let end = offset.saturating_add(len);
        if end > self.len {
            return Err(GpuError::Length {
                op: "GpuBuffer::slice",
                what: "range end",
                expected: self.len,
                found: end,
            });
        }
        Ok(View {
            ptr: self.buf.as_device_ptr().wrapping_add(offset),
            len,
        })
    }

    /// Copies `data` (exactly `len()` elements) into the buffer.
    ///
    /// # Errors
    /// [`GpuError::Length`] on a length mismatch; [`GpuError::Driver`] if the copy fails.
    pub fn copy_from(&mut self, data: &[T]) -> GpuResult<()> {
        check_exact("GpuBuffer::copy_from", "data", self.len, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        self.buf
            .index(..self.len)
            .copy_from(data)
            .map_err(driver("cuMemcpyHtoD", format!("len={}", self.len)))
    }

    /// Copies `data` into the first `data.len()` elements of the buffer.
    ///
    /// # Errors
    /// [`GpuError::Length`] if `data` is longer than the buffer; [`GpuError::Driver`] if the
    /// copy fails.
    pub fn copy_prefix_from(&mut self, data: &[T]) -> GpuResult<()> {
        if data.len() > self.len {
            return Err(GpuError::Length {
                op: "GpuBuffer::copy_prefix_from",
                what: "source",
                expected: self.len,
                found: data.len(),
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        self.buf
            .index(..data.len())
            .copy_from(data)
            .map_err(driver("cuMemcpyHtoD", format!("len={}", data.len())))
    }

    /// Copies the first `data.len()` elements into `data` (waits for queued work).
    ///
    /// # Errors
    /// [`GpuError::Length`] if `data` is longer than the buffer; [`GpuError::Driver`] if the
    /// copy (or an earlier asynchronous launch) fails.
    pub fn copy_prefix_to(&self, data: &mut [T]) -> GpuResult<()> {
        if data.len() > self.len {
            return Err(GpuError::Length {
                op: "GpuBuffer::copy_to",
                what: "destination",
                expected: self.len,
                found: data.len(),
            });
        }
        if data.is_empty() {
            return Ok(());
        }
        self.buf
            .index(..data.len())
            .copy_to(data)
            .map_err(driver("cuMemcpyDtoH", format!("len={}", data.len())))
    }

    /// The buffer's contents as a vector (waits for queued work).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the copy (or an earlier asynchronous launch) fails.
    pub fn to_vec(&self) -> GpuResult<Vec<T>>
    where
        T: Default + Clone,
    {
        let mut v = vec![T::default(); self.len];
        self.copy_prefix_to(&mut v)?;
        Ok(v)
    }
}

/// A checked window `(pointer, length)` into a [`GpuBuffer`]: what the launch wrappers take.
/// Kernel wrappers check each view's length against what the launch touches.
#[derive(Clone, Copy)]
pub struct View<T: DeviceCopy> {
    ptr: DevicePointer<T>,
    len: usize,
}

impl<T: DeviceCopy> std::fmt::Debug for View<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "View[{}]", self.len)
    }
}

impl<T: DeviceCopy> View<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the view has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements `offset .. offset + len` of this view.
    ///
    /// # Errors
    /// [`GpuError::Length`] if the range does not fit.
    pub fn sub(&self, offset: usize, len: usize) -> GpuResult<View<T>> {
        let end = offset.saturating_add(len);
        if end > self.len {
            return Err(GpuError::Length {
                op: "View::sub",
                what: "range end",
                expected: self.len,
                found: end,
            });
        }
        Ok(View {
            ptr: self.ptr.wrapping_add(offset),
            len,
        })
    }

    pub(crate) fn ptr(&self) -> DevicePointer<T> {
        self.ptr
    }
}
