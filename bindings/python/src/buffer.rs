//! Float buffers from Python: anything with the buffer protocol (NumPy arrays, `bytes`,
//! `bytearray`, `array.array`, a `memoryview` of a CPU torch or JAX array), of float32 or
//! float64 in native byte order.
//!
//! The wheel uses the stable ABI from CPython 3.9, whose limited API has no
//! `PyObject_GetBuffer` (added in 3.11), so buffers are read through Python's own
//! `memoryview`: one copy (`memoryview.tobytes()`, which also handles any strides) and
//! written back by slice assignment into the `memoryview`. That costs one pass over the
//! data, like the statistic computed from it.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PySlice};
use safestep_core::Real;

/// The element type of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `float32` (format `f`).
    F32,
    /// `float64` (format `d`).
    F64,
}

/// A float type a buffer can hold, with its native-byte-order encoding.
pub trait Element: Real {
    /// The `struct` format character (`d` or `f`).
    const FORMAT: &'static str;
    /// The dtype.
    const DTYPE: Dtype;
    /// Appends the native-endian bytes of `self`.
    fn push_bytes(self, out: &mut Vec<u8>);
}

impl Element for f64 {
    const FORMAT: &'static str = "d";
    const DTYPE: Dtype = Dtype::F64;
    fn push_bytes(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_ne_bytes());
    }
}

impl Element for f32 {
    const FORMAT: &'static str = "f";
    const DTYPE: Dtype = Dtype::F32;
    fn push_bytes(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_ne_bytes());
    }
}

/// The numbers of a buffer, widened to `f64`, with its shape and dtype.
#[derive(Debug, Clone)]
pub struct Floats {
    /// The values in C order.
    pub data: Vec<f64>,
    /// The buffer's shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The element type it had.
    pub dtype: Dtype,
}

/// `memoryview(obj)`, or a `TypeError` naming `what`.
fn memoryview<'py>(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = obj.py();
    let mv = py.import("builtins")?.getattr("memoryview")?;
    mv.call1((obj,)).map_err(|_| {
        let ty = obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_default();
        PyTypeError::new_err(format!(
            "{what}: expected an object with the buffer protocol (a NumPy array, bytes-like, \
             or a memoryview of a CPU torch/JAX array), got {ty}"
        ))
    })
}

/// The dtype of a `memoryview`'s format, accepting native byte order only.
fn dtype_of(what: &str, mv: &Bound<'_, PyAny>) -> PyResult<Dtype> {
    let format: String = mv.getattr("format")?.extract()?;
    let native_prefix = |c: char| {
        c == '@'
            || c == '='
            || (cfg!(target_endian = "little") && c == '<')
            || (cfg!(target_endian = "big") && (c == '>' || c == '!'))
    };
    let code = format.trim_start_matches(native_prefix);
    match code {
        "d" => Ok(Dtype::F64),
        "f" => Ok(Dtype::F32),
        _ => Err(PyValueError::new_err(format!(
            "{what}: expected float32 or float64 in native byte order, got buffer format {format:?}"
        ))),
    }
}

/// Decodes native-endian `f32`/`f64` bytes, widened to `f64`.
fn decode(bytes: &[u8], dtype: Dtype) -> Vec<f64> {
    match dtype {
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect(),
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    }
}

/// Reads a float32/float64 buffer (any strides) as `f64` values in C order.
pub fn read(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Floats> {
    let mv = memoryview(what, obj)?;
    let dtype = dtype_of(what, &mv)?;
    let shape: Vec<usize> = mv.getattr("shape")?.extract()?;
    let bytes = mv.call_method0("tobytes")?;
    let bytes = bytes.cast::<PyBytes>()?;
    Ok(Floats {
        data: decode(bytes.as_bytes(), dtype),
        shape,
        dtype,
    })
}

/// Reads an "array-like" result (of a callback): a buffer as [`read`], else anything NumPy
/// turns into a float64 array (when NumPy is installed), else a sequence of floats.
pub fn read_array_like(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<Vec<f64>> {
    if let Ok(f) = read(what, obj) {
        return Ok(f.data);
    }
    let py = obj.py();
    if let Ok(np) = py.import("numpy") {
        if let Ok(arr) = np.call_method1("asarray", (obj, "float64")) {
            return Ok(read(what, &arr)?.data);
        }
    }
    obj.extract::<Vec<f64>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}: expected an array (buffer protocol, NumPy-convertible, or a sequence of floats)"
        ))
    })
}

/// A writable, C-contiguous float buffer, to be read as `T` and written back in place.
pub struct Writable<'py> {
    mv: Bound<'py, PyAny>,
    /// The element type.
    pub dtype: Dtype,
    /// Number of elements.
    pub len: usize,
}

impl<'py> Writable<'py> {
    /// Opens `obj` for in-place update, or a `ValueError`/`TypeError` naming `what`.
    pub fn open(what: &str, obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let mv = memoryview(what, obj)?;
        let dtype = dtype_of(what, &mv)?;
        if mv.getattr("readonly")?.extract::<bool>()? {
            return Err(PyValueError::new_err(format!(
                "{what}: the buffer is read-only (pass a writable array: it is updated in place)"
            )));
        }
        if !mv.getattr("c_contiguous")?.extract::<bool>()? {
            return Err(PyValueError::new_err(format!(
                "{what}: the buffer must be C-contiguous (it is updated in place)"
            )));
        }
        let nbytes: usize = mv.getattr("nbytes")?.extract()?;
        let len = nbytes / if dtype == Dtype::F64 { 8 } else { 4 };
        Ok(Writable { mv, dtype, len })
    }

    /// The current values as `T`.
    pub fn get<T: Element>(&self) -> PyResult<Vec<T>> {
        let bytes = self.mv.call_method0("tobytes")?;
        let bytes = bytes.cast::<PyBytes>()?;
        Ok(decode(bytes.as_bytes(), self.dtype)
            .into_iter()
            .map(T::of)
            .collect())
    }

    /// Overwrites the buffer with `values` (the same length and dtype `T`).
    pub fn set<T: Element>(&self, values: &[T]) -> PyResult<()> {
        debug_assert_eq!(T::DTYPE, self.dtype);
        let py = self.mv.py();
        let bytes = encode(py, values);
        let flat = self.mv.call_method1("cast", ("B",))?;
        flat.set_item(PySlice::full(py), bytes)?;
        Ok(())
    }
}

/// The native-endian bytes of `values`.
fn to_bytes<T: Element>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(values));
    for &x in values {
        x.push_bytes(&mut out);
    }
    out
}

/// `values` as a `bytes` object of native-endian floats.
pub fn encode<'py, T: Element>(py: Python<'py>, values: &[T]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, &to_bytes(values))
}

/// A fresh, writable 1-D array holding `values`, for a callback: a NumPy array of the
/// matching dtype when NumPy is importable (`numpy` is `Some`), else a `memoryview` of
/// format `d`/`f` over a new `bytearray`.
pub fn new_array<'py, T: Element>(
    py: Python<'py>,
    numpy: Option<&Bound<'py, PyModule>>,
    values: &[T],
) -> PyResult<Bound<'py, PyAny>> {
    let owned = PyByteArray::new(py, &to_bytes(values));
    match numpy {
        Some(np) => {
            let dtype = if T::DTYPE == Dtype::F64 {
                "float64"
            } else {
                "float32"
            };
            np.call_method1("frombuffer", (owned, dtype))
        }
        None => memoryview("x", owned.as_any())?.call_method1("cast", (T::FORMAT,)),
    }
}
