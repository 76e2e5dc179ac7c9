//! A run's output folder: one process at a time, and every file of one snapshot.
//!
//! - **Lock.** [`RunFolder::open`] takes an exclusive advisory lock on `DIR/.lock` for the
//!   run's lifetime (released by the operating system when the process ends, however it
//!   ends); a second run on the same folder is refused with the holder's pid.
//! - **Snapshots.** The run's files (`config.toml`, `tasks.csv`, `controller.csv`,
//!   `summary.json`, `checkpoint.bin`) are written together into a new folder
//!   `DIR/.snapshots/<n>/`, which then becomes current by one atomic rename of the symbolic
//!   link `DIR/current`. `DIR/<file>` are fixed links to `current/<file>`, so at every
//!   instant, whatever kills the process, they all belong to one snapshot.
//! - **Cleaning.** A failed write removes what it wrote; snapshots and temporary files left
//!   by a killed run are removed by the next [`RunFolder::open`].

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::outputs::OutputError;

/// Name of the lock file in a run folder.
pub const LOCK_FILE: &str = ".lock";
/// Folder of the snapshots in a run folder.
pub const SNAPSHOTS: &str = ".snapshots";
/// The link to the current snapshot.
pub const CURRENT: &str = "current";

/// A run folder whose lock this process holds (until it is dropped).
#[derive(Debug)]
pub struct RunFolder {
    dir: PathBuf,
    /// Held open: the lock lasts as long as the file.
    _lock: File,
}

/// Why a run folder could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// Another process holds the folder's lock.
    #[error("{dir} is in use by another safestep run (pid {holder}); wait for it to finish or choose another --out")]
    InUse {
        /// The folder.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file (`unknown` if unreadable).
        holder: String,
    },
    /// Creating, locking or cleaning the folder failed.
    #[error(transparent)]
    Io(#[from] OutputError),
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a directory entry name is a temporary file or folder of a write in progress.
fn is_temporary(name: &str) -> bool {
    name.contains(".tmp-")
}

/// Syncs a directory's entries to disk (best effort: not every filesystem supports it).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// The path of run file `file` in run folder `dir`: `dir/file`, or the current snapshot's
/// copy when a killed run left that link out (the next [`RunFolder::open`] recreates it).
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("safestep-doc-run-file-{}", std::process::id()));
/// use safestep_host::folder::run_file;
/// assert_eq!(run_file(&dir, "config.toml"), dir.join("config.toml")); // nothing there at all
/// ```
pub fn run_file(dir: &Path, file: &str) -> PathBuf {
    let direct = dir.join(file);
    let in_current = dir.join(CURRENT).join(file);
    if fs::symlink_metadata(&direct).is_err() && in_current.exists() {
        in_current
    } else {
        direct
    }
}

/// The pid a lock holder wrote into the lock file; a holder that has just taken the lock
/// may not have written it yet, so an empty file is read again for up to 50 ms.
fn read_holder(lock: &mut File) -> String {
    for _ in 0..50 {
        let mut holder = String::new();
        let _ = lock
            .seek(SeekFrom::Start(0))
            .and_then(|_| lock.read_to_string(&mut holder));
        let holder = holder.trim();
        if !holder.is_empty() {
            return holder.to_string();
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    "unknown".to_string()
}

impl RunFolder {
    /// Creates `dir` if needed, takes its lock and removes what a killed run left behind
    /// (stale snapshots and temporary files).
    ///
    /// # Errors
    /// [`FolderError::InUse`] naming the holder's pid; [`FolderError::Io`] if the folder or
    /// its lock file cannot be created.
    pub fn open(dir: &Path) -> Result<Self, FolderError> {
        fs::create_dir_all(dir).map_err(write_err(dir))?;
        let path = dir.join(LOCK_FILE);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(write_err(&path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(FolderError::InUse {
                    dir: dir.to_path_buf(),
                    holder: read_holder(&mut lock),
                });
            }
            Err(TryLockError::Error(e)) => return Err(write_err(&path)(e).into()),
        }
        // The pid in a fixed width, overwriting in place: the file is never empty or a mix
        // of two pids once a holder has written it, so a contender reads a whole pid (at
        // worst, for an instant, the previous holder's).
        let pid = format!("{:<10}", std::process::id());
        lock.seek(SeekFrom::Start(0))
            .and_then(|_| lock.write_all(pid.as_bytes()))
            .and_then(|()| lock.set_len(pid.len() as u64))
            .map_err(write_err(&path))?;
        let folder = RunFolder {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        folder.clean_stale()?;
        folder.repair_links()?;
        Ok(folder)
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the folder holds a run's files (a snapshot, or files of an older layout).
    pub fn holds_run(&self) -> bool {
        fs::symlink_metadata(self.dir.join(CURRENT)).is_ok()
            || crate::outputs::RUN_FILES
                .iter()
                .any(|f| fs::symlink_metadata(self.dir.join(f)).is_ok())
    }

    /// The snapshot `current` points to, if any.
    fn current_target(&self) -> Option<PathBuf> {
        fs::read_link(self.dir.join(CURRENT)).ok()
    }

    /// Removes snapshots other than the current one, and temporary files.
    fn clean_stale(&self) -> Result<(), OutputError> {
        let current = self
            .current_target()
            .and_then(|t| t.file_name().map(|n| n.to_os_string()));
        let snapshots = self.dir.join(SNAPSHOTS);
        if let Ok(entries) = fs::read_dir(&snapshots) {
            for entry in entries.flatten() {
                if Some(entry.file_name()) != current {
                    let path = entry.path();
                    fs::remove_dir_all(&path).map_err(write_err(&path))?;
                }
            }
        }
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if is_temporary(&entry.file_name().to_string_lossy()) {
                    let path = entry.path();
                    let removed = if path.is_dir() && !path.is_symlink() {
                        fs::remove_dir_all(&path)
                    } else {
                        fs::remove_file(&path)
                    };
                    removed.map_err(write_err(&path))?;
                }
            }
        }
        Ok(())
    }

    /// Removes every run file (the snapshots, the links and files of an older layout);
    /// keeps the lock.
    pub fn clear(&self) -> Result<(), OutputError> {
        let snapshots = self.dir.join(SNAPSHOTS);
        if snapshots.exists() {
            fs::remove_dir_all(&snapshots).map_err(write_err(&snapshots))?;
        }
        for name in crate::outputs::RUN_FILES.iter().chain([&CURRENT]) {
            let path = self.dir.join(name);
            if fs::symlink_metadata(&path).is_ok() {
                fs::remove_file(&path).map_err(write_err(&path))?;
            }
        }
        Ok(())
    }

    /// Writes `files` (name, contents) as the new current snapshot: all in a new snapshot
    /// folder, made current by one atomic rename. On error nothing it wrote is left.
    ///
    /// # Errors
    /// [`OutputError::Write`] naming the file that could not be written.
    pub fn commit(&self, files: &[(&str, &[u8])]) -> Result<(), OutputError> {
        let snapshots = self.dir.join(SNAPSHOTS);
        fs::create_dir_all(&snapshots).map_err(write_err(&snapshots))?;
        let previous = self.current_target();
        let number = previous
            .as_deref()
            .and_then(|p| p.file_name()?.to_str()?.parse::<u64>().ok())
            .map_or(0, |n| n + 1);
        let name = format!("{number:08}");
        let pid = std::process::id();
        let staging = snapshots.join(format!("{name}.tmp-{pid}"));
        let result = (|| {
            fs::create_dir(&staging).map_err(write_err(&staging))?;
            for (file, bytes) in files {
                let path = staging.join(file);
                let mut f = File::create(&path).map_err(write_err(&path))?;
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(write_err(&path))?;
            }
            sync_dir(&staging);
            let done = snapshots.join(&name);
            fs::rename(&staging, &done).map_err(write_err(&done))?;
            sync_dir(&snapshots);
            let link = self.dir.join(format!("{CURRENT}.tmp-{pid}"));
            let _ = fs::remove_file(&link);
            std::os::unix::fs::symlink(Path::new(SNAPSHOTS).join(&name), &link)
                .map_err(write_err(&link))?;
            let current = self.dir.join(CURRENT);
            fs::rename(&link, &current).map_err(|e| {
                let _ = fs::remove_file(&link);
                write_err(&current)(e)
            })?;
            sync_dir(&self.dir);
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&staging);
            // The finished snapshot too, unless `current` already points to it.
            if self.current_target().as_deref() != Some(&Path::new(SNAPSHOTS).join(&name)) {
                let _ = fs::remove_dir_all(snapshots.join(&name));
            }
            return Err(e);
        }
        if let Some(prev) = previous {
            let _ = fs::remove_dir_all(self.dir.join(prev));
        }
        for (file, _) in files {
            self.link(file)?;
        }
        Ok(())
    }

    /// Recreates any missing `DIR/<file>` link to a file of the current snapshot (a run
    /// killed between making a snapshot current and linking its files leaves them out).
    fn repair_links(&self) -> Result<(), OutputError> {
        let Ok(entries) = fs::read_dir(self.dir.join(CURRENT)) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if let Some(file) = name.to_str() {
                if !is_temporary(file) && fs::symlink_metadata(self.dir.join(file)).is_err() {
                    self.link(file)?;
                }
            }
        }
        Ok(())
    }

    /// Makes `DIR/<file>` a link to `current/<file>` (replacing a file of an older layout).
    fn link(&self, file: &str) -> Result<(), OutputError> {
        let path = self.dir.join(file);
        let target = Path::new(CURRENT).join(file);
        if fs::read_link(&path).ok().as_deref() == Some(&target) {
            return Ok(());
        }
        let tmp = self.dir.join(format!(".{file}.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(write_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            write_err(&path)(e)
        })
    }
}
