//! The file system seam: every file operation of the logs and the group journals goes through
//! [`Disk`] and [`DiskFile`].
//!
//! Production uses [`OsDisk`], a thin layer over `std::fs` (one virtual call per system call).
//! The simulator (`crate::sim`) plugs in a disk that keeps what was synced apart from what was
//! only written, and that loses, tears, fails and flips what a real disk can.
//!
//! The contract the broker relies on is POSIX's, at its strictest:
//! - data written to a file is durable only once [`DiskFile::sync_data`] (or `sync_all`) of
//!   that file succeeded;
//! - a new, renamed or removed name is durable only once [`Disk::sync_dir`] of its directory
//!   succeeded;
//! - after a failed sync, what was written since the last successful one may be lost even if a
//!   later sync succeeds (Linux drops the pages' dirty state on an I/O error).

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An open file, shared by whoever writes, reads and syncs it.
pub type FileRef = Arc<dyn DiskFile>;

/// A disk: names and the files behind them.
pub trait Disk: Send + Sync + Debug {
    /// Creates `path` and every missing parent directory.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// The names in directory `dir`, unordered.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Whether `path` names a file or directory.
    fn exists(&self, path: &Path) -> bool;
    /// Opens `path` for reading and writing, creating it (empty) when missing.
    fn open(&self, path: &Path) -> io::Result<FileRef>;
    /// The whole content of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes the names in `dir` (created, renamed, removed) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file.
pub trait DiskFile: Send + Sync + Debug {
    /// Fills `buf` from `offset`; an error if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, growing the file as needed.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Cuts or extends (with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file's size in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the data and the size durable (`fsync`).
    fn sync_all(&self) -> io::Result<()>;
}

/// Creates `dir` (under `root`) and its missing parents so that they survive a power cut:
/// every directory from `dir`'s parent up to `root`'s parent is synced, whether or not this
/// call created a name in it, because an earlier call may have created one and failed to sync
/// it. Syncing a directory with nothing new in it is cheap.
pub fn create_dir_durable(disk: &dyn Disk, root: &Path, dir: &Path) -> io::Result<()> {
    disk.create_dir_all(dir)?;
    for ancestor in dir.ancestors().skip(1) {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        disk.sync_dir(ancestor)?;
        if !ancestor.starts_with(root) {
            break;
        }
    }
    Ok(())
}

/// Reads a whole file until two reads agree (at most four): a read that returned a flipped
/// bit must not be taken for the file's content. For small files read at start-up.
pub fn read_stable(disk: &dyn Disk, path: &Path) -> io::Result<Vec<u8>> {
    let mut last = disk.read(path)?;
    for _ in 0..3 {
        let again = disk.read(path)?;
        if again == last {
            return Ok(again);
        }
        last = again;
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "four reads of the file returned different bytes",
    ))
}

/// Opens `path`, creating it when missing; its name is synced into its directory before this
/// returns, even if the file existed (an earlier call may have created it and failed to sync).
pub fn open_durable(disk: &dyn Disk, path: &Path) -> io::Result<FileRef> {
    let file = disk.open(path)?;
    if let Some(dir) = path.parent() {
        disk.sync_dir(dir)?;
    }
    Ok(file)
}

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsDisk;

impl OsDisk {
    /// The OS disk, shared.
    pub fn shared() -> Arc<dyn Disk> {
        Arc::new(Self)
    }
}

impl Disk for OsDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Some(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        Ok(names)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn open(&self, path: &Path) -> io::Result<FileRef> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Arc::new(OsFile(file)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

/// A file of the OS.
#[derive(Debug)]
struct OsFile(File);

impl DiskFile for OsFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_os_disk_reads_what_it_wrote_and_renames() {
        let dir = tempfile::tempdir().unwrap();
        let disk = OsDisk;
        let sub = dir.path().join("a/b");
        disk.create_dir_all(&sub).unwrap();
        let f = disk.open(&sub.join("x")).unwrap();
        f.write_all_at(b"hello", 3).unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.size().unwrap(), 8);
        let mut buf = [0u8; 5];
        f.read_exact_at(&mut buf, 3).unwrap();
        assert_eq!(&buf, b"hello");
        assert!(f.read_exact_at(&mut buf, 6).is_err());
        disk.rename(&sub.join("x"), &sub.join("y")).unwrap();
        disk.sync_dir(&sub).unwrap();
        assert_eq!(disk.list(&sub).unwrap(), vec!["y".to_string()]);
        assert_eq!(disk.read(&sub.join("y")).unwrap(), b"\0\0\0hello");
        f.set_len(2).unwrap();
        assert_eq!(f.size().unwrap(), 2);
        disk.remove_file(&sub.join("y")).unwrap();
        assert!(!disk.exists(&sub.join("y")));
    }

    #[cfg(feature = "simulation")]
    #[test]
    fn durable_directories_and_files_keep_their_names_through_a_crash() {
        use crate::sim::disk::{Faults, SimDisk};
        let disk = SimDisk::new(1, Faults::default());
        let root = Path::new("/data");
        create_dir_durable(&disk, root, &root.join("topics/t/0")).unwrap();
        let f = open_durable(&disk, &root.join("topics/t/0/a.log")).unwrap();
        f.write_all_at(b"x", 0).unwrap();
        f.sync_data().unwrap();
        disk.create_dir_all(&root.join("groups/t")).unwrap();
        disk.crash();
        assert_eq!(disk.read(&root.join("topics/t/0/a.log")).unwrap(), b"x");
        assert!(!disk.exists(&root.join("groups")), "never synced");
    }

    #[cfg(feature = "simulation")]
    #[test]
    fn a_stable_read_outlasts_flipped_bits() {
        use crate::sim::disk::{Faults, SimDisk};
        let disk = SimDisk::new(
            7,
            Faults {
                p_bit_flip: 0.3,
                ..Faults::default()
            },
        );
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/x")).unwrap();
        f.write_all_at(&[0x5a; 64], 0).unwrap();
        for _ in 0..50 {
            if let Ok(b) = read_stable(&disk, Path::new("/d/x")) {
                assert_eq!(b, vec![0x5a; 64]);
            }
        }
        assert!(disk.counts().bit_flips > 0);
    }
}
