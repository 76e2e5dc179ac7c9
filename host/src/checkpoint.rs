//! The resume checkpoint (`checkpoint.bin`): the state after the last finished task, in a
//! versioned, checksummed envelope, checked against the rest of the run folder before use.
//!
//! Layout: the 8 bytes `SAFESTEP`, the format number (`u32`, little-endian), the payload's
//! length (`u64`), its CRC-32 (`u32`), then the payload (postcard). A damaged file — any
//! flipped bit, a truncation, bytes appended — is refused naming what is wrong, never used.
//!
//! ```
//! use safestep_host::checkpoint::{decode, CheckpointError};
//! assert!(matches!(decode(b"short"), Err(CheckpointError::TooShort(5))));
//! assert!(matches!(decode(&[b'x'; 64]), Err(CheckpointError::BadMagic)));
//! ```

use serde::{Deserialize, Serialize};

use crate::outputs::{tasks_csv, Metric, TaskRow};
use crate::trainer::TrainerState;

/// The first bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"SAFESTEP";

/// The format this safestep writes (5: the scheduler state holds `lr0`, the trainer both
/// power iterations and the unit trackers, the indicators log rides along, the file is
/// checksummed, and so is the finished part of `controller.csv`; a task row's accuracies
/// are optional and it holds the online loss, for the regression benchmark).
pub const FORMAT: u32 = 5;

const HEADER: usize = 8 + 4 + 8 + 4;

/// The state after the last finished task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The resolved configuration, as written to `config.toml`.
    pub config: String,
    /// The first task not yet finished.
    pub next_task: usize,
    /// Rows of the finished tasks.
    pub task_rows: Vec<TaskRow>,
    /// Bytes of `controller.csv` that belong to finished tasks.
    pub controller_len: usize,
    /// CRC-32 of those bytes: an edit that keeps the length is refused too.
    pub controller_crc: u32,
    /// Trainer state at the end of the last finished task.
    pub trainer: TrainerState,
    /// `indicators.csv` of the finished tasks (empty when none are recorded).
    pub indicators_csv: String,
    /// Seconds the finished tasks spent on indicators.
    pub indicator_seconds: f64,
}

/// Why a checkpoint cannot be used; each names what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckpointError {
    /// Too short to hold the header.
    #[error("too short ({0} bytes) to be a checkpoint")]
    TooShort(usize),
    /// The first bytes are not [`MAGIC`].
    #[error("not a safestep checkpoint (bad magic bytes)")]
    BadMagic,
    /// Another format version.
    #[error("checkpoint format {found} (this safestep reads {FORMAT})")]
    Format {
        /// The version found.
        found: u32,
    },
    /// The payload is not as long as the header says.
    #[error("payload of {found} bytes, the header says {expected}{}", if found > expected { " (bytes appended)" } else { " (truncated)" })]
    Length {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// The payload's checksum does not match: the file is damaged.
    #[error(
        "checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
    )]
    Checksum {
        /// CRC-32 stored in the header.
        stored: u32,
        /// CRC-32 of the payload read.
        computed: u32,
    },
    /// The payload does not decode.
    #[error("payload does not decode: {0}")]
    Decode(String),
    /// The payload decodes but leaves bytes over.
    #[error("{0} bytes after the payload")]
    Trailing(usize),
    /// The checkpoint disagrees with itself or with the run folder's other files.
    #[error("{0}")]
    Inconsistent(String),
}

/// The checkpoint's bytes.
pub fn encode(ck: &Checkpoint) -> Vec<u8> {
    // Serialising plain data into memory cannot fail.
    let payload = postcard::to_stdvec(ck).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Reads a checkpoint, refusing any damage.
///
/// # Errors
/// A [`CheckpointError`] naming the problem.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    if bytes.len() < HEADER {
        return Err(CheckpointError::TooShort(bytes.len()));
    }
    let (head, payload) = bytes.split_at(HEADER);
    if &head[..8] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    let word = |range: std::ops::Range<usize>| -> [u8; 4] {
        let mut w = [0u8; 4];
        w.copy_from_slice(&head[range]);
        w
    };
    let found = u32::from_le_bytes(word(8..12));
    if found != FORMAT {
        return Err(CheckpointError::Format { found });
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&head[12..20]);
    let expected = u64::from_le_bytes(len);
    if expected != payload.len() as u64 {
        return Err(CheckpointError::Length {
            expected,
            found: payload.len() as u64,
        });
    }
    let stored = u32::from_le_bytes(word(20..24));
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(CheckpointError::Checksum { stored, computed });
    }
    let (ck, rest): (Checkpoint, &[u8]) =
        postcard::take_from_bytes(payload).map_err(|e| CheckpointError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CheckpointError::Trailing(rest.len()));
    }
    ck.check_self()?;
    Ok(ck)
}

impl Checkpoint {
    /// The checkpoint agrees with itself: `next_task` finished rows numbered `0..next_task`.
    fn check_self(&self) -> Result<(), CheckpointError> {
        if self.task_rows.len() != self.next_task {
            return Err(CheckpointError::Inconsistent(format!(
                "next_task is {} but {} finished tasks are recorded",
                self.next_task,
                self.task_rows.len()
            )));
        }
        if let Some((i, r)) = self
            .task_rows
            .iter()
            .enumerate()
            .find(|(i, r)| r.task != *i)
        {
            return Err(CheckpointError::Inconsistent(format!(
                "finished task {i} is recorded as task {}",
                r.task
            )));
        }
        Ok(())
    }

    /// The checkpoint agrees with the folder's `tasks.csv` (as written for a model of
    /// `layers` layers and the benchmark's `metric`) and `controller.csv`, and its step count with its rows
    /// (`resets_each_task`: the method restarts the count at every task).
    ///
    /// # Errors
    /// [`CheckpointError::Inconsistent`] naming the disagreement.
    pub fn check_folder(
        &self,
        tasks_on_disk: &str,
        layers: usize,
        metric: Metric,
        controller_on_disk: &str,
        resets_each_task: bool,
    ) -> Result<(), CheckpointError> {
        let bad = |m: String| Err(CheckpointError::Inconsistent(m));
        if tasks_on_disk != tasks_csv(&self.task_rows, layers, metric) {
            return bad(format!(
                "tasks.csv ({} rows) differs from the checkpoint's {} finished tasks",
                tasks_on_disk.lines().count().saturating_sub(1),
                self.task_rows.len()
            ));
        }
        if controller_on_disk.len() != self.controller_len {
            return bad(format!(
                "controller.csv has {} bytes, the checkpoint records {}",
                controller_on_disk.len(),
                self.controller_len
            ));
        }
        let crc = crc32fast::hash(controller_on_disk.as_bytes());
        if crc != self.controller_crc {
            return bad(format!(
                "controller.csv's checksum is {crc:08x}, the checkpoint records {:08x}: it was edited",
                self.controller_crc
            ));
        }
        let steps: u64 = if resets_each_task {
            self.task_rows.last().map_or(0, |r| r.steps)
        } else {
            self.task_rows.iter().map(|r| r.steps).sum()
        };
        if steps != self.trainer.t {
            return bad(format!(
                "the trainer has taken {} steps, the finished tasks {steps}",
                self.trainer.t
            ));
        }
        Ok(())
    }
}
