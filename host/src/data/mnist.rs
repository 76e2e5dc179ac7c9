//! MNIST digits in memory: the embedded subset or the standard files from a directory.
//!
//! ```
//! use safestep_host::data::Mnist;
//! let mnist = Mnist::embedded().unwrap();
//! assert_eq!(mnist.n, 2000);
//! assert_eq!(mnist.image(0).len(), Mnist::PIXELS);
//! assert!(mnist.labels.iter().all(|&l| l < 10));
//! ```

use std::path::{Path, PathBuf};

use super::embedded;
use super::idx::{self, IdxArray, IdxError, IdxKind};

/// Errors of the data layer; each names the file or parameter at fault.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A benchmark that uses no digits was asked for an MNIST task stream.
    #[error("{benchmark} is not an MNIST benchmark (it generates its own data)")]
    NotMnist {
        /// The benchmark's name.
        benchmark: &'static str,
    },
    /// An IDX file could not be read or is malformed.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// Neither the raw nor the gzip variant of a required file exists in the directory.
    #[error("{dir}: none of {tried:?} found")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// File names tried, in order.
        tried: Vec<String>,
    },
    /// Images that are not 28×28.
    #[error("{file}: images are {rows}×{cols}, expected 28×28")]
    BadImageShape {
        /// The images file.
        file: String,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// The images and labels files disagree on the number of examples.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        /// The images file.
        images: String,
        /// Images it holds.
        image_count: usize,
        /// The labels file.
        labels: String,
        /// Labels it holds.
        label_count: usize,
    },
    /// A label outside 0..=9.
    #[error("{file}: label {label} at index {index} is not a digit 0-9")]
    BadLabel {
        /// The labels file.
        file: String,
        /// Position of the label.
        index: usize,
        /// The value.
        label: u8,
    },
    /// A task stream asked for more examples than the data holds, or for none.
    #[error("examples = {requested}: must be between 1 and {available} (the digits available)")]
    BadExampleCount {
        /// Examples requested.
        requested: usize,
        /// Digits available.
        available: usize,
    },
}

/// MNIST digits with pixels scaled to `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// Row-major `n × 784` pixels in `[0, 1]` (byte value / 255).
    pub images: Vec<f32>,
    /// `n` labels, digits 0–9.
    pub labels: Vec<u8>,
    /// Number of digits.
    pub n: usize,
}

/// File names tried by [`Mnist::load_dir`] for the images, in order.
pub const IMAGE_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-images-idx3-ubyte.gz",
    "images-idx3-ubyte",
    "images-idx3-ubyte.gz",
];
/// File names tried by [`Mnist::load_dir`] for the labels, in order.
pub const LABEL_FILES: [&str; 4] = [
    "train-labels-idx1-ubyte",
    "train-labels-idx1-ubyte.gz",
    "labels-idx1-ubyte",
    "labels-idx1-ubyte.gz",
];

impl Mnist {
    /// Pixels per image (28 × 28).
    pub const PIXELS: usize = 784;
    /// Number of classes.
    pub const CLASSES: usize = 10;

    /// The 2000 digits compiled into the binary (see [`embedded`]).
    pub fn embedded() -> Result<Self, DataError> {
        let images = idx::parse_idx(embedded::IMAGES_GZ, embedded::IMAGES_NAME, IdxKind::Images)?;
        let labels = idx::parse_idx(embedded::LABELS_GZ, embedded::LABELS_NAME, IdxKind::Labels)?;
        Self::from_idx(images, embedded::IMAGES_NAME, labels, embedded::LABELS_NAME)
    }

    /// Loads the standard MNIST training files from `dir`: `train-images-idx3-ubyte` and
    /// `train-labels-idx1-ubyte`, each raw or with `.gz` (also accepted: the same names
    /// without the `train-` prefix, as in the project's shared 10k set).
    ///
    /// Memory: the full 60,000-digit training set takes 188 MB as `f32`; use
    /// [`Mnist::load_dir_limited`] to keep only the first digits.
    pub fn load_dir(dir: &Path) -> Result<Self, DataError> {
        Self::load_dir_limited(dir, None)
    }

    /// Like [`Mnist::load_dir`], keeping only the first `limit` digits (all when `None` or
    /// when the files hold fewer); the files are still validated in full.
    pub fn load_dir_limited(dir: &Path, limit: Option<usize>) -> Result<Self, DataError> {
        let ip = find_file(dir, &IMAGE_FILES)?;
        let lp = find_file(dir, &LABEL_FILES)?;
        let mut m = Self::load_files(&ip, &lp)?;
        if let Some(limit) = limit {
            m.truncate(limit);
        }
        Ok(m)
    }

    /// Loads an images file and a labels file (raw or gzip) and checks they agree.
    pub fn load_files(images: &Path, labels: &Path) -> Result<Self, DataError> {
        let i = idx::read_idx_file(images, IdxKind::Images)?;
        let l = idx::read_idx_file(labels, IdxKind::Labels)?;
        Self::from_idx(
            i,
            &images.display().to_string(),
            l,
            &labels.display().to_string(),
        )
    }

    /// The digits `pick(n)` chooses from the standard files in `dir` (see
    /// [`Mnist::load_dir`] for the names), read without loading the rest: the headers are
    /// checked first (28×28 images, equal counts) before anything is inflated, then the
    /// files are streamed once, converting only the chosen digits (in `pick`'s order) and
    /// checking the rest (every label a digit, nothing missing or appended). Peak memory is
    /// the chosen digits plus `pick`'s list, whatever size the files claim.
    ///
    /// # Errors
    /// [`DataError`] naming the file and the problem, or `pick`'s own error.
    pub fn load_subset(
        dir: &Path,
        pick: impl FnOnce(usize) -> Result<Vec<usize>, DataError>,
    ) -> Result<Self, DataError> {
        let (ip, lp) = (find_file(dir, &IMAGE_FILES)?, find_file(dir, &LABEL_FILES)?);
        let (iname, lname) = (ip.display().to_string(), lp.display().to_string());
        let mut images = idx::open_idx_file(&ip, IdxKind::Images)?;
        let mut labels = idx::open_idx_file(&lp, IdxKind::Labels)?;
        let n = check_shapes(images.dims(), &iname, labels.dims()[0], &lname)?;
        let order = pick(n)?;
        // Where each chosen digit goes, in file order.
        let mut wanted: Vec<(usize, usize)> =
            order.iter().enumerate().map(|(k, &i)| (i, k)).collect();
        wanted.sort_unstable();
        let mut out = vec![0.0f32; order.len() * Self::PIXELS];
        let mut pixels = [0u8; Self::PIXELS];
        let mut at = 0;
        for &(i, k) in &wanted {
            images.skip_elements((i - at) * Self::PIXELS)?;
            images.read_elements(&mut pixels)?;
            for (o, &b) in out[k * Self::PIXELS..(k + 1) * Self::PIXELS]
                .iter_mut()
                .zip(&pixels)
            {
                *o = f32::from(b) / 255.0;
            }
            at = i + 1;
        }
        images.finish()?;
        let mut all_labels = vec![0u8; n];
        labels.read_elements(&mut all_labels)?;
        labels.finish()?;
        check_labels(&all_labels, &lname)?;
        Ok(Mnist {
            images: out,
            labels: order.iter().map(|&i| all_labels[i]).collect(),
            n: order.len(),
        })
    }

    /// Keeps the first `n` digits (no effect when `n >= self.n`) and frees the rest.
    pub fn truncate(&mut self, n: usize) {
        if n < self.n {
            self.images.truncate(n * Self::PIXELS);
            self.images.shrink_to_fit();
            self.labels.truncate(n);
            self.labels.shrink_to_fit();
            self.n = n;
        }
    }

    /// Validates parsed IDX arrays (28×28 images, equal counts, labels 0–9) and scales the
    /// pixels; the names are used in errors.
    pub fn from_idx(
        images: IdxArray,
        images_name: &str,
        labels: IdxArray,
        labels_name: &str,
    ) -> Result<Self, DataError> {
        let n = check_shapes(&images.dims, images_name, labels.data.len(), labels_name)?;
        check_labels(&labels.data, labels_name)?;
        let images = images.data.iter().map(|&b| f32::from(b) / 255.0).collect();
        Ok(Mnist {
            images,
            labels: labels.data,
            n,
        })
    }

    /// Pixels of digit `i` (784 values). Panics if `i >= n`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.images[i * Self::PIXELS..(i + 1) * Self::PIXELS]
    }
}

/// The first of `names` that is a file in `dir`.
fn find_file(dir: &Path, names: &[&str]) -> Result<PathBuf, DataError> {
    names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            tried: names.iter().map(|s| s.to_string()).collect(),
        })
}

/// Checks image dimensions `[n, 28, 28]` and a label count equal to `n`; returns `n`.
fn check_shapes(
    dims: &[usize],
    images_name: &str,
    label_count: usize,
    labels_name: &str,
) -> Result<usize, DataError> {
    let (n, rows, cols) = match dims {
        &[n, r, c] => (n, r, c),
        _ => {
            return Err(DataError::BadImageShape {
                file: images_name.to_string(),
                rows: 0,
                cols: 0,
            })
        }
    };
    if rows != 28 || cols != 28 {
        return Err(DataError::BadImageShape {
            file: images_name.to_string(),
            rows,
            cols,
        });
    }
    if label_count != n {
        return Err(DataError::CountMismatch {
            images: images_name.to_string(),
            image_count: n,
            labels: labels_name.to_string(),
            label_count,
        });
    }
    Ok(n)
}

/// Checks every label is a digit 0–9.
fn check_labels(labels: &[u8], labels_name: &str) -> Result<(), DataError> {
    match labels
        .iter()
        .enumerate()
        .find(|(_, &l)| l as usize >= Mnist::CLASSES)
    {
        Some((index, &label)) => Err(DataError::BadLabel {
            file: labels_name.to_string(),
            index,
            label,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::File::create(dir.join(name))
            .unwrap()
            .write_all(bytes)
            .unwrap();
    }

    fn idx_images(n: u32, r: u32, c: u32) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for d in [n, r, c] {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend(std::iter::repeat_n(255u8, (n * r * c) as usize));
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 1];
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("safestep-mnist-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn embedded_loads_and_is_class_balanced() {
        let m = Mnist::embedded().unwrap();
        assert_eq!(m.n, embedded::COUNT);
        assert_eq!(m.images.len(), m.n * Mnist::PIXELS);
        assert!(m.images.iter().all(|&p| (0.0..=1.0).contains(&p)));
        let mut counts = [0usize; 10];
        for &l in &m.labels[..1000] {
            counts[l as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 70), "{counts:?}");
    }

    #[test]
    fn load_dir_standard_names_and_errors() {
        let d = tempdir("ok");
        write(&d, "train-images-idx3-ubyte", &idx_images(3, 28, 28));
        write(&d, "train-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
        let m = Mnist::load_dir(&d).unwrap();
        assert_eq!((m.n, m.labels.clone()), (3, vec![1, 2, 3]));
        assert_eq!(m.images[0], 1.0);

        // Count mismatch names both files.
        write(&d, "train-labels-idx1-ubyte", &idx_labels(&[1, 2]));
        let err = Mnist::load_dir(&d).unwrap_err();
        assert!(matches!(
            err,
            DataError::CountMismatch {
                image_count: 3,
                label_count: 2,
                ..
            }
        ));
        assert!(err.to_string().contains("train-labels-idx1-ubyte"), "{err}");

        // Label out of range.
        write(&d, "train-labels-idx1-ubyte", &idx_labels(&[1, 12, 3]));
        let err = Mnist::load_dir(&d).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadLabel {
                    index: 1,
                    label: 12,
                    ..
                }
            ),
            "{err}"
        );

        // Wrong image size.
        write(&d, "train-images-idx3-ubyte", &idx_images(3, 28, 27));
        write(&d, "train-labels-idx1-ubyte", &idx_labels(&[1, 2, 3]));
        let err = Mnist::load_dir(&d).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadImageShape {
                    rows: 28,
                    cols: 27,
                    ..
                }
            ),
            "{err}"
        );

        // Truncated images file: the IDX error names the file.
        let mut bytes = idx_images(3, 28, 28);
        bytes.truncate(bytes.len() - 10);
        write(&d, "train-images-idx3-ubyte", &bytes);
        let err = Mnist::load_dir(&d).unwrap_err();
        assert!(
            matches!(err, DataError::Idx(IdxError::Truncated { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
        std::fs::remove_dir_all(&d).unwrap();

        let empty = tempdir("empty");
        let err = Mnist::load_dir(&empty).unwrap_err();
        assert!(matches!(err, DataError::MissingFile { .. }), "{err}");
        std::fs::remove_dir_all(&empty).unwrap();
    }

    #[test]
    fn load_dir_reads_shared_gzip_set_when_present() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist10k");
        if !dir.is_dir() {
            return;
        }
        let m = Mnist::load_dir(&dir).unwrap();
        assert_eq!(m.n, 10_000);
        let first = Mnist::load_dir_limited(&dir, Some(5)).unwrap();
        assert_eq!(first.n, 5);
        assert_eq!(first.images, m.images[..5 * 784]);
        assert_eq!(first.labels, m.labels[..5]);
        let e = Mnist::embedded().unwrap();
        assert_eq!(&m.images[..e.images.len()], &e.images[..]);
        assert_eq!(&m.labels[..e.n], &e.labels[..]);
    }
}
