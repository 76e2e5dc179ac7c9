//! Reader for the IDX format of the MNIST files, raw or gzip-compressed.
//!
//! An IDX file is a 4-byte magic number `00 00 TT NN` (`TT` the element type, `0x08` for
//! unsigned bytes, the only type MNIST uses; `NN` the number of dimensions), then `NN`
//! big-endian `u32` dimension sizes, then the elements in row-major order. The reader
//! recognises gzip by its magic bytes (`1f 8b`), not by the file name, reads the header
//! first and then exactly the number of elements the header announces, so a truncated,
//! corrupt or oversized file is reported (naming the file and the problem) instead of
//! being silently accepted, and a forged header cannot make it allocate more than
//! [`MAX_ELEMENTS`].
//!
//! ```
//! use safestep_host::data::idx::{parse_idx, IdxKind};
//! // A 1-dimensional label file with two labels, 3 and 7.
//! let bytes = [0u8, 0, 8, 1, 0, 0, 0, 2, 3, 7];
//! let labels = parse_idx(&bytes[..], "labels", IdxKind::Labels).unwrap();
//! assert_eq!(labels.dims, vec![2]);
//! assert_eq!(labels.data, vec![3, 7]);
//! ```

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

/// Largest element count accepted from a header (1 GiB of bytes; full MNIST is 47 MB).
pub const MAX_ELEMENTS: usize = 1 << 30;

/// Which MNIST file an IDX array is expected to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxKind {
    /// Images: 3 dimensions (count, rows, columns), magic `0x00000803` (2051).
    Images,
    /// Labels: 1 dimension (count), magic `0x00000801` (2049).
    Labels,
}

impl IdxKind {
    /// The magic number as a big-endian `u32`.
    pub fn magic(self) -> u32 {
        0x0800 | self.dims() as u32
    }

    /// Number of dimensions.
    pub fn dims(self) -> usize {
        match self {
            IdxKind::Images => 3,
            IdxKind::Labels => 1,
        }
    }

    fn name(self) -> &'static str {
        match self {
            IdxKind::Images => "images",
            IdxKind::Labels => "labels",
        }
    }
}

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimension sizes, outermost first (for images: count, rows, columns).
    pub dims: Vec<usize>,
    /// Elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// What went wrong reading an IDX file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum IdxError {
    /// The file could not be opened.
    #[error("{file}: cannot open: {source}")]
    Open {
        /// The file.
        file: String,
        /// The operating-system error.
        source: io::Error,
    },
    /// Reading failed with an I/O error.
    #[error("{file}: read failed ({context}): {source}")]
    Read {
        /// The file.
        file: String,
        /// What was being read (magic number, dimensions, elements).
        context: &'static str,
        /// The underlying error.
        source: io::Error,
    },
    /// The file ended before the announced content.
    #[error("{file}: truncated: {what} needs {expected} bytes, found {found}")]
    Truncated {
        /// The file.
        file: String,
        /// The part that is incomplete.
        what: &'static str,
        /// Bytes required.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The magic number is not the one of the expected file kind.
    #[error("{file}: bad magic number 0x{found:08x}, expected 0x{expected:08x} (IDX {kind} file)")]
    BadMagic {
        /// The file.
        file: String,
        /// Magic number found.
        found: u32,
        /// Magic number required.
        expected: u32,
        /// `images` or `labels`.
        kind: &'static str,
    },
    /// A dimension is zero, or the element count exceeds [`MAX_ELEMENTS`].
    #[error("{file}: invalid dimensions {dims:?}: {problem}")]
    BadDims {
        /// The file.
        file: String,
        /// The dimensions read from the header.
        dims: Vec<u32>,
        /// What is wrong with them.
        problem: &'static str,
    },
    /// The gzip layer failed: corrupt or truncated compressed data, or a CRC mismatch.
    #[error("{file}: corrupt or truncated gzip data (while reading the {context}): {source}")]
    Gzip {
        /// The file.
        file: String,
        /// What was being read (magic number, dimensions, elements, end of file).
        context: &'static str,
        /// The decoder's error.
        source: io::Error,
    },
    /// Bytes follow the announced elements.
    #[error(
        "{file}: {extra}+ unexpected bytes after the {expected} elements the header announces"
    )]
    TrailingData {
        /// The file.
        file: String,
        /// Elements announced by the header.
        expected: usize,
        /// Extra bytes found (at least this many).
        extra: usize,
    },
}

/// Reads an IDX file of the given kind, raw or gzip-compressed (detected by content).
pub fn read_idx_file(path: &Path, kind: IdxKind) -> Result<IdxArray, IdxError> {
    let file = path.display().to_string();
    let f = File::open(path).map_err(|source| IdxError::Open {
        file: file.clone(),
        source,
    })?;
    parse_idx(BufReader::new(f), &file, kind)
}

/// Parses IDX content (raw or gzip, detected by the `1f 8b` magic) from a reader; `file`
/// names the source in errors.
pub fn parse_idx<R: Read>(reader: R, file: &str, kind: IdxKind) -> Result<IdxArray, IdxError> {
    let mut stream = IdxStream::open(reader, file, kind)?;
    let mut data = vec![0u8; stream.elements()];
    stream.read_elements(&mut data)?;
    stream.finish()?;
    Ok(IdxArray {
        dims: stream.dims().to_vec(),
        data,
    })
}

/// An IDX file read as a stream: the header first (so its shape can be checked before any
/// element is read or inflated), then the elements in pieces, then [`IdxStream::finish`],
/// which reads the rest in fixed-size pieces to check the file holds exactly what the
/// header announces. Memory stays bounded by what the caller keeps, whatever the file claims.
pub struct IdxStream<'a> {
    reader: Box<dyn Read + 'a>,
    file: String,
    gz: bool,
    dims: Vec<usize>,
    remaining: usize,
}

impl std::fmt::Debug for IdxStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdxStream")
            .field("file", &self.file)
            .field("dims", &self.dims)
            .field("remaining", &self.remaining)
            .finish()
    }
}

/// Opens an IDX file as a stream (see [`IdxStream`]).
pub fn open_idx_file(path: &Path, kind: IdxKind) -> Result<IdxStream<'static>, IdxError> {
    let file = path.display().to_string();
    let f = File::open(path).map_err(|source| IdxError::Open {
        file: file.clone(),
        source,
    })?;
    IdxStream::open(BufReader::new(f), &file, kind)
}

impl<'a> IdxStream<'a> {
    /// Reads and checks the header (magic number, dimensions) from `reader`, raw or gzip.
    ///
    /// # Errors
    /// [`IdxError`] naming `file`: truncated header, bad magic, zero or too many elements.
    pub fn open<R: Read + 'a>(reader: R, file: &str, kind: IdxKind) -> Result<Self, IdxError> {
        let mut reader = reader;
        let mut head = [0u8; 2];
        let n = read_full(&mut reader, &mut head, file, "magic number", false)?;
        if n < head.len() {
            return Err(IdxError::Truncated {
                file: file.to_string(),
                what: "magic number",
                expected: 4,
                found: n,
            });
        }
        let chained = io::Cursor::new(head).chain(reader);
        let (mut reader, gz): (Box<dyn Read + 'a>, bool) = if head == [0x1f, 0x8b] {
            (Box::new(flate2::read::GzDecoder::new(chained)), true)
        } else {
            (Box::new(chained), false)
        };
        let dims = read_header(&mut reader, file, kind, gz)?;
        let remaining = dims.iter().product();
        Ok(IdxStream {
            reader,
            file: file.to_string(),
            gz,
            dims,
            remaining,
        })
    }

    /// Dimension sizes, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Elements the header announces in all.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// Reads the next `buf.len()` elements.
    ///
    /// # Errors
    /// [`IdxError::Truncated`] when the file ends first (or `buf` asks for more than the
    /// header announces); read or gzip errors naming the file.
    pub fn read_elements(&mut self, buf: &mut [u8]) -> Result<(), IdxError> {
        let want = buf.len().min(self.remaining);
        let n = read_full(
            &mut self.reader,
            &mut buf[..want],
            &self.file,
            "elements",
            self.gz,
        )?;
        if n < buf.len() {
            return Err(IdxError::Truncated {
                file: self.file.clone(),
                what: "elements",
                expected: self.elements(),
                found: self.elements() - self.remaining + n,
            });
        }
        self.remaining -= n;
        Ok(())
    }

    /// Skips the next `count` elements (read in fixed-size pieces and dropped).
    ///
    /// # Errors
    /// As [`IdxStream::read_elements`].
    pub fn skip_elements(&mut self, count: usize) -> Result<(), IdxError> {
        let mut scratch = [0u8; 1 << 16];
        let mut left = count;
        while left > 0 {
            let k = left.min(scratch.len());
            self.read_elements(&mut scratch[..k])?;
            left -= k;
        }
        Ok(())
    }

    /// Reads what is left of the announced elements and checks nothing follows them.
    ///
    /// # Errors
    /// [`IdxError::Truncated`], [`IdxError::TrailingData`], or a read/gzip error (a CRC
    /// mismatch of the gzip layer shows here).
    pub fn finish(&mut self) -> Result<(), IdxError> {
        self.skip_elements(self.remaining)?;
        let mut extra = [0u8; 64];
        let n = read_full(
            &mut self.reader,
            &mut extra,
            &self.file,
            "end of file",
            self.gz,
        )?;
        if n > 0 {
            return Err(IdxError::TrailingData {
                file: self.file.clone(),
                expected: self.elements(),
                extra: n,
            });
        }
        Ok(())
    }
}

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
fn read_full<R: Read + ?Sized>(
    reader: &mut R,
    buf: &mut [u8],
    file: &str,
    context: &'static str,
    gz: bool,
) -> Result<usize, IdxError> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(k) => filled += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) if gz => {
                return Err(IdxError::Gzip {
                    file: file.to_string(),
                    context,
                    source,
                })
            }
            Err(source) => {
                return Err(IdxError::Read {
                    file: file.to_string(),
                    context,
                    source,
                })
            }
        }
    }
    Ok(filled)
}

/// The magic number and dimensions, checked.
fn read_header<R: Read + ?Sized>(
    reader: &mut R,
    file: &str,
    kind: IdxKind,
    gz: bool,
) -> Result<Vec<usize>, IdxError> {
    let mut magic = [0u8; 4];
    let n = read_full(reader, &mut magic, file, "magic number", gz)?;
    if n < 4 {
        return Err(IdxError::Truncated {
            file: file.to_string(),
            what: "magic number",
            expected: 4,
            found: n,
        });
    }
    let found = u32::from_be_bytes(magic);
    if found != kind.magic() {
        return Err(IdxError::BadMagic {
            file: file.to_string(),
            found,
            expected: kind.magic(),
            kind: kind.name(),
        });
    }
    let ndims = kind.dims();
    let mut raw_dims = vec![0u8; 4 * ndims];
    let n = read_full(reader, &mut raw_dims, file, "dimensions", gz)?;
    if n < raw_dims.len() {
        return Err(IdxError::Truncated {
            file: file.to_string(),
            what: "dimensions",
            expected: raw_dims.len(),
            found: n,
        });
    }
    let dims32: Vec<u32> = raw_dims
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if dims32.contains(&0) {
        return Err(IdxError::BadDims {
            file: file.to_string(),
            dims: dims32,
            problem: "a dimension is zero",
        });
    }
    let mut total: usize = 1;
    for &d in &dims32 {
        total = match total.checked_mul(d as usize) {
            Some(t) if t <= MAX_ELEMENTS => t,
            _ => {
                return Err(IdxError::BadDims {
                    file: file.to_string(),
                    dims: dims32,
                    problem: "more than MAX_ELEMENTS (2^30) elements",
                })
            }
        };
    }
    Ok(dims32.into_iter().map(|d| d as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn labels_file(count: u32, labels: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 1];
        v.extend_from_slice(&count.to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn images_file(n: u32, r: u32, c: u32, fill: usize) -> Vec<u8> {
        let mut v = vec![0, 0, 8, 3];
        for d in [n, r, c] {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend((0..fill).map(|i| (i % 251) as u8));
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn reads_raw_and_gzip_alike() {
        let raw = images_file(2, 3, 4, 24);
        let a = parse_idx(&raw[..], "x", IdxKind::Images).unwrap();
        let b = parse_idx(&gz(&raw)[..], "x.gz", IdxKind::Images).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.dims, vec![2, 3, 4]);
        assert_eq!(a.data.len(), 24);
        assert_eq!(a.data[23], 23);
    }

    #[test]
    fn truncated_elements_name_file_and_counts() {
        for bytes in [images_file(2, 3, 4, 20), gz(&images_file(2, 3, 4, 20))] {
            let err = parse_idx(&bytes[..], "imgs.idx", IdxKind::Images).unwrap_err();
            match &err {
                IdxError::Truncated {
                    file,
                    what,
                    expected,
                    found,
                } => {
                    assert_eq!(file, "imgs.idx");
                    assert_eq!(*what, "elements");
                    assert_eq!((*expected, *found), (24, 20));
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains("imgs.idx"));
        }
    }

    #[test]
    fn truncated_header() {
        let err = parse_idx(&[0u8, 0, 8][..], "f", IdxKind::Labels).unwrap_err();
        assert!(matches!(
            err,
            IdxError::Truncated {
                what: "magic number",
                ..
            }
        ));
        let err = parse_idx(&[0u8, 0, 8, 3, 0, 0, 0, 1, 0][..], "f", IdxKind::Images).unwrap_err();
        assert!(matches!(
            err,
            IdxError::Truncated {
                what: "dimensions",
                expected: 12,
                found: 5,
                ..
            }
        ));
        let err = parse_idx(&[][..], "f", IdxKind::Labels).unwrap_err();
        assert!(matches!(err, IdxError::Truncated { found: 0, .. }));
    }

    #[test]
    fn wrong_magic_is_reported() {
        // A labels file given where images are expected.
        let bytes = labels_file(2, &[1, 2]);
        let err = parse_idx(&bytes[..], "train-images", IdxKind::Images).unwrap_err();
        match err {
            IdxError::BadMagic {
                found, expected, ..
            } => {
                assert_eq!(found, 0x0801);
                assert_eq!(expected, 0x0803);
            }
            other => panic!("unexpected {other:?}"),
        }
        // Element type other than u8 (0x0d = float).
        let bytes = [0u8, 0, 0x0d, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse_idx(&bytes[..], "f", IdxKind::Labels),
            Err(IdxError::BadMagic { .. })
        ));
    }

    #[test]
    fn zero_and_huge_dims_rejected() {
        let bytes = images_file(0, 28, 28, 0);
        assert!(matches!(
            parse_idx(&bytes[..], "f", IdxKind::Images),
            Err(IdxError::BadDims { .. })
        ));
        let bytes = images_file(u32::MAX, u32::MAX, 28, 0);
        let err = parse_idx(&bytes[..], "f", IdxKind::Images).unwrap_err();
        assert!(matches!(err, IdxError::BadDims { .. }), "{err}");
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = labels_file(2, &[1, 2]);
        bytes.push(9);
        let err = parse_idx(&bytes[..], "lab", IdxKind::Labels).unwrap_err();
        assert!(
            matches!(err, IdxError::TrailingData { extra: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn corrupt_gzip_is_a_read_error_naming_the_file() {
        let mut bytes = gz(&labels_file(100, &[3; 100]));
        // Damage the deflate stream and cut the trailer.
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        bytes[12] ^= 0x55;
        let err = parse_idx(&bytes[..], "broken.gz", IdxKind::Labels).unwrap_err();
        assert!(err.to_string().contains("broken.gz"), "{err}");
        let truncated = &gz(&labels_file(100, &[3; 100]))[..15];
        let err = parse_idx(truncated, "short.gz", IdxKind::Labels).unwrap_err();
        assert!(matches!(err, IdxError::Gzip { .. }), "{err}");
        assert!(err.to_string().contains("short.gz"), "{err}");
        // A wrong CRC (data intact, trailer damaged) is caught at the end of the stream.
        let mut bytes = gz(&labels_file(100, &[3; 100]));
        let crc = bytes.len() - 8;
        bytes[crc] ^= 0x01;
        let err = parse_idx(&bytes[..], "crc.gz", IdxKind::Labels).unwrap_err();
        assert!(
            matches!(
                err,
                IdxError::Gzip {
                    context: "end of file",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_path() {
        let err =
            read_idx_file(Path::new("/nonexistent/dir/train-images"), IdxKind::Images).unwrap_err();
        assert!(matches!(err, IdxError::Open { .. }));
        assert!(err.to_string().contains("/nonexistent/dir/train-images"));
    }
}
