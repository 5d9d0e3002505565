//! A simulated disk with a fault model: it keeps what is durable apart from what was only
//! written, and a seeded random source decides what a crash keeps, which syncs and writes fail
//! and which reads come back with a flipped bit.
//!
//! The model, after LazyFS and TigerBeetle's storage faults:
//! - Each file has its durable bytes and the operations (writes, size changes) since its last
//!   successful sync. Reads see both (the page cache).
//! - A crash ([`SimDisk::crash`]) keeps the durable bytes. Each unsynced operation is dropped,
//!   except with `p_keep_unsynced` it reached the platter anyway, whole, or torn: cut at a
//!   512-byte sector boundary (`p_torn`). Names (created, renamed, removed) made since the last
//!   sync of their directory are dropped, unless that directory was written back anyway.
//! - A sync fails with EIO with `p_sync_eio`; the unsynced operations of that file are then
//!   gone for good (a later sync that succeeds does not bring them back), as on Linux.
//! - A write fails with ENOSPC with `p_enospc`, after a part of it (whole sectors) was written.
//! - A read returns one flipped bit with `p_bit_flip` (the bytes on disk stay intact).

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::storage::{Disk, DiskFile, FileRef};

const SECTOR: u64 = 512;

/// How often each fault happens, per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// An unsynced write or name change survives a crash anyway.
    pub p_keep_unsynced: f64,
    /// An unsynced write that survives a crash is torn at a sector boundary.
    pub p_torn: f64,
    /// A file sync fails with EIO (its unsynced writes are lost).
    pub p_sync_eio: f64,
    /// A write fails with ENOSPC after part of it was written.
    pub p_enospc: f64,
    /// A read returns one flipped bit.
    pub p_bit_flip: f64,
}

/// How many times each fault happened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Crashes.
    pub crashes: u64,
    /// Unsynced writes a crash dropped.
    pub lost_writes: u64,
    /// Unsynced writes a crash kept in part.
    pub torn_writes: u64,
    /// Unsynced writes a crash kept whole.
    pub kept_writes: u64,
    /// Directories whose unsynced names a crash dropped.
    pub lost_names: u64,
    /// Syncs that failed with EIO.
    pub sync_errors: u64,
    /// Writes that failed with ENOSPC.
    pub enospc: u64,
    /// Reads that returned a flipped bit.
    pub bit_flips: u64,
}

impl FaultCounts {
    /// Adds another run's counts.
    pub fn add(&mut self, o: &Self) {
        self.crashes += o.crashes;
        self.lost_writes += o.lost_writes;
        self.torn_writes += o.torn_writes;
        self.kept_writes += o.kept_writes;
        self.lost_names += o.lost_names;
        self.sync_errors += o.sync_errors;
        self.enospc += o.enospc;
        self.bit_flips += o.bit_flips;
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { at: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Op {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            Self::Write { at, data } => write_into(bytes, *at, data),
            Self::SetLen(len) => bytes.resize(usize::try_from(*len).unwrap_or(0), 0),
        }
    }
}

fn write_into(bytes: &mut Vec<u8>, at: u64, data: &[u8]) {
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    let end = at.saturating_add(data.len());
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    if let Some(dst) = bytes.get_mut(at..end) {
        dst.copy_from_slice(data);
    }
}

#[derive(Debug, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Op>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Dir,
    File(usize),
}

#[derive(Debug)]
struct State {
    rng: StdRng,
    faults: Faults,
    counts: FaultCounts,
    inodes: Vec<Inode>,
    names: BTreeMap<PathBuf, Entry>,
    durable_names: BTreeMap<PathBuf, Entry>,
    /// Bumped by a crash: handles opened before it fail.
    generation: u64,
    /// Faults are injected only while armed (the checker reads without them).
    armed: bool,
    /// Operations left before the power goes (`Some(0)`: it went; every operation fails).
    power_left: Option<u64>,
}

impl State {
    /// Counts an operation against a coming power cut; an error once the power is gone.
    fn powered(&mut self) -> io::Result<()> {
        match &mut self.power_left {
            Some(0) => Err(io::Error::other("the power is off")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.armed && p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    fn children(&self, dir: &Path, durable: bool) -> Vec<(PathBuf, Entry)> {
        let map = if durable {
            &self.durable_names
        } else {
            &self.names
        };
        map.iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, e)| (p.clone(), *e))
            .collect()
    }

    fn file(&self, path: &Path) -> io::Result<usize> {
        match self.names.get(path) {
            Some(Entry::File(id)) => Ok(*id),
            Some(Entry::Dir) => Err(io::Error::other(format!(
                "{} is a directory",
                path.display()
            ))),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{} not found", path.display()),
            )),
        }
    }

    fn parent_exists(&self, path: &Path) -> io::Result<()> {
        match path.parent() {
            Some(p) if p.as_os_str().is_empty() || self.names.get(p) == Some(&Entry::Dir) => Ok(()),
            None => Ok(()),
            Some(p) => Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} not found", p.display()),
            )),
        }
    }

    fn maybe_flip(&mut self, buf: &mut [u8]) {
        if !buf.is_empty() && self.chance(self.faults.p_bit_flip) {
            let i = self.rng.random_range(0..buf.len());
            let bit = self.rng.random_range(0..8);
            if let Some(b) = buf.get_mut(i) {
                *b ^= 1 << bit;
            }
            self.counts.bit_flips += 1;
        }
    }
}

/// What a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    /// A directory.
    Dir,
    /// A file of this many bytes.
    File(u64),
}

/// The simulated disk. Cloning shares it.
#[derive(Debug, Clone)]
pub struct SimDisk {
    state: Arc<Mutex<State>>,
}

impl SimDisk {
    /// An empty disk whose faults are drawn from `seed`.
    pub fn new(seed: u64, faults: Faults) -> Self {
        let mut names = BTreeMap::new();
        names.insert(PathBuf::from("/"), Entry::Dir);
        Self {
            state: Arc::new(Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                faults,
                counts: FaultCounts::default(),
                inodes: Vec::new(),
                durable_names: names.clone(),
                names,
                generation: 0,
                armed: true,
                power_left: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The faults so far.
    pub fn counts(&self) -> FaultCounts {
        self.lock().counts
    }

    /// Turns fault injection on or off (crashes are always the caller's).
    pub fn arm(&self, armed: bool) {
        self.lock().armed = armed;
    }

    /// Cuts the power after `ops` more operations: from then on every operation fails, as if
    /// the machine stopped in the middle of whatever it was doing, until [`SimDisk::crash`].
    pub fn power_cut_after(&self, ops: u64) {
        self.lock().power_left = Some(ops);
    }

    /// Calls off a power cut that has not happened yet.
    pub fn cancel_power_cut(&self) {
        let mut st = self.lock();
        if st.power_left != Some(0) {
            st.power_left = None;
        }
    }

    /// Whether the power went (a crash is due).
    pub fn power_is_off(&self) -> bool {
        self.lock().power_left == Some(0)
    }

    /// A power cut: what was not synced is lost, kept or torn, as the fault model says. Files
    /// opened before it can no longer be used.
    pub fn crash(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        st.generation += 1;
        st.power_left = None;
        st.counts.crashes += 1;
        let faults = st.faults;
        for i in 0..st.inodes.len() {
            let pending = std::mem::take(&mut st.inodes[i].pending);
            let mut durable = std::mem::take(&mut st.inodes[i].durable);
            for op in pending {
                if !st.rng.random_bool(faults.p_keep_unsynced.clamp(0.0, 1.0)) {
                    st.counts.lost_writes += 1;
                    continue;
                }
                match op {
                    Op::Write { at, data } if st.rng.random_bool(faults.p_torn.clamp(0.0, 1.0)) => {
                        // Whole sectors from the start of the write reached the disk.
                        let end = at + data.len() as u64;
                        let first_boundary = at.div_ceil(SECTOR) * SECTOR;
                        let cuts: Vec<u64> =
                            (first_boundary..end).step_by(SECTOR as usize).collect();
                        let keep = if cuts.is_empty() {
                            0
                        } else {
                            cuts[st.rng.random_range(0..cuts.len())] - at
                        };
                        let keep = usize::try_from(keep).unwrap_or(0);
                        write_into(&mut durable, at, data.get(..keep).unwrap_or(&[]));
                        st.counts.torn_writes += 1;
                    }
                    op => {
                        op.apply(&mut durable);
                        st.counts.kept_writes += 1;
                    }
                }
            }
            st.inodes[i].current = durable.clone();
            st.inodes[i].durable = durable;
        }
        // Names: per directory, the unsynced changes are kept (written back) or lost.
        let dirs: Vec<PathBuf> = st
            .names
            .iter()
            .chain(st.durable_names.iter())
            .filter(|(_, e)| **e == Entry::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        let mut next = st.durable_names.clone();
        for dir in dirs {
            let now = st.children(&dir, false);
            let was = st.children(&dir, true);
            if now == was {
                continue;
            }
            if st.rng.random_bool(faults.p_keep_unsynced.clamp(0.0, 1.0)) {
                for (p, _) in &was {
                    next.remove(p);
                }
                next.extend(now);
            } else {
                st.counts.lost_names += 1;
            }
        }
        // A name under a directory that did not survive is gone with it.
        let kept: BTreeMap<PathBuf, Entry> = next
            .iter()
            .filter(|(p, _)| {
                p.ancestors()
                    .skip(1)
                    .all(|a| a.as_os_str().is_empty() || next.get(a) == Some(&Entry::Dir))
            })
            .map(|(p, e)| (p.clone(), *e))
            .collect();
        st.names = kept.clone();
        st.durable_names = kept;
    }

    /// What `path` is now: a directory, or a file of some size.
    pub fn stat(&self, path: &Path) -> Option<Stat> {
        let st = self.lock();
        match st.names.get(path)? {
            Entry::Dir => Some(Stat::Dir),
            Entry::File(id) => Some(Stat::File(st.inodes.get(*id)?.current.len() as u64)),
        }
    }

    /// Every file's durable bytes and name, for a test to look at.
    pub fn durable_files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let st = self.lock();
        st.durable_names
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::File(id) => Some((p.clone(), st.inodes.get(*id)?.durable.clone())),
                Entry::Dir => None,
            })
            .collect()
    }
}

impl Disk for SimDisk {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.powered()?;
        for a in path.ancestors() {
            if a.as_os_str().is_empty() {
                continue;
            }
            match st.names.get(a) {
                Some(Entry::Dir) => {}
                Some(Entry::File(_)) => {
                    return Err(io::Error::other(format!("{} is a file", a.display())));
                }
                None => {
                    st.names.insert(a.to_path_buf(), Entry::Dir);
                }
            }
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut st = self.lock();
        st.powered()?;
        if st.names.get(dir) != Some(&Entry::Dir) {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("directory {} not found", dir.display()),
            ));
        }
        Ok(st
            .children(dir, false)
            .into_iter()
            .filter_map(|(p, _)| Some(p.file_name()?.to_str()?.to_string()))
            .collect())
    }

    fn exists(&self, path: &Path) -> bool {
        self.lock().names.contains_key(path)
    }

    fn open(&self, path: &Path) -> io::Result<FileRef> {
        let mut st = self.lock();
        st.powered()?;
        let id = match st.file(path) {
            Ok(id) => id,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                st.parent_exists(path)?;
                st.inodes.push(Inode::default());
                let id = st.inodes.len() - 1;
                st.names.insert(path.to_path_buf(), Entry::File(id));
                id
            }
            Err(e) => return Err(e),
        };
        Ok(Arc::new(SimFile {
            disk: self.clone(),
            id,
            generation: st.generation,
            path: path.to_path_buf(),
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut st = self.lock();
        st.powered()?;
        let id = st.file(path)?;
        let mut out = st.inodes[id].current.clone();
        st.maybe_flip(&mut out);
        Ok(out)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.powered()?;
        let id = st.file(from)?;
        st.parent_exists(to)?;
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), Entry::File(id));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.powered()?;
        st.file(path)?;
        st.names.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.powered()?;
        if st.names.get(dir) != Some(&Entry::Dir) {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such directory"));
        }
        let p = st.faults.p_sync_eio;
        if st.chance(p) {
            st.counts.sync_errors += 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        let now = st.children(dir, false);
        for (p, _) in st.children(dir, true) {
            st.durable_names.remove(&p);
        }
        st.durable_names.extend(now);
        Ok(())
    }
}

/// An open file of a [`SimDisk`].
#[derive(Debug)]
struct SimFile {
    disk: SimDisk,
    id: usize,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    fn state(&self) -> io::Result<MutexGuard<'_, State>> {
        let mut st = self.disk.lock();
        st.powered()?;
        if st.generation != self.generation {
            return Err(io::Error::other(format!(
                "{} was opened before the crash",
                self.path.display()
            )));
        }
        Ok(st)
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state()?;
        let p = st.faults.p_sync_eio;
        let failed = st.chance(p);
        let inode = &mut st.inodes[self.id];
        let pending = std::mem::take(&mut inode.pending);
        if failed {
            // The pages are clean again but never reached the disk: lost at the next crash.
            st.counts.sync_errors += 1;
            return Err(io::Error::from_raw_os_error(5));
        }
        for op in &pending {
            op.apply(&mut inode.durable);
        }
        Ok(())
    }
}

impl DiskFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut st = self.state()?;
        let data = &st.inodes[self.id].current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let Some(src) = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
        else {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        };
        buf.copy_from_slice(src);
        st.maybe_flip(buf);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state()?;
        let p = st.faults.p_enospc;
        let (data, result) = if st.chance(p) {
            st.counts.enospc += 1;
            let sectors = buf.len() as u64 / SECTOR;
            let keep = st.rng.random_range(0..=sectors) * SECTOR;
            (
                buf.get(..usize::try_from(keep).unwrap_or(0)).unwrap_or(&[]),
                Err(io::Error::from_raw_os_error(28)),
            )
        } else {
            (buf, Ok(()))
        };
        if !data.is_empty() {
            let inode = &mut st.inodes[self.id];
            write_into(&mut inode.current, offset, data);
            inode.pending.push(Op::Write {
                at: offset,
                data: data.to_vec(),
            });
        }
        result
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state()?;
        let inode = &mut st.inodes[self.id];
        inode.current.resize(usize::try_from(len).unwrap_or(0), 0);
        inode.pending.push(Op::SetLen(len));
        Ok(())
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.state()?.inodes[self.id].current.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_faults() -> Faults {
        Faults::default()
    }

    #[test]
    fn a_crash_keeps_what_was_synced_and_drops_the_rest() {
        let disk = SimDisk::new(1, no_faults());
        let dir = Path::new("/d");
        disk.create_dir_all(dir).unwrap();
        let f = disk.open(&dir.join("a")).unwrap();
        f.write_all_at(b"synced", 0).unwrap();
        f.sync_data().unwrap();
        disk.sync_dir(dir).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        f.write_all_at(b"-lost", 6).unwrap();
        let g = disk.open(&dir.join("b")).unwrap();
        g.write_all_at(b"unnamed", 0).unwrap();
        g.sync_data().unwrap();
        disk.crash();
        assert_eq!(disk.read(&dir.join("a")).unwrap(), b"synced");
        assert!(!disk.exists(&dir.join("b")), "its name was never synced");
        assert!(
            f.write_all_at(b"x", 0).is_err(),
            "handles die with the crash"
        );
        assert_eq!(disk.counts().lost_writes, 1);
    }

    #[test]
    fn a_failed_sync_loses_its_writes_even_after_a_later_sync() {
        let disk = SimDisk::new(
            2,
            Faults {
                p_sync_eio: 1.0,
                ..no_faults()
            },
        );
        disk.create_dir_all(Path::new("/d")).unwrap();
        disk.arm(false);
        disk.sync_dir(Path::new("/")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        disk.arm(true);
        f.write_all_at(b"first", 0).unwrap();
        assert!(f.sync_data().is_err());
        disk.arm(false);
        f.write_all_at(b"second", 5).unwrap();
        f.sync_data().unwrap();
        assert_eq!(disk.read(Path::new("/d/a")).unwrap(), b"firstsecond");
        disk.crash();
        assert_eq!(disk.read(Path::new("/d/a")).unwrap(), b"\0\0\0\0\0second");
    }

    #[test]
    fn a_torn_write_keeps_whole_sectors_from_its_start() {
        let disk = SimDisk::new(
            3,
            Faults {
                p_keep_unsynced: 1.0,
                p_torn: 1.0,
                ..no_faults()
            },
        );
        disk.create_dir_all(Path::new("/d")).unwrap();
        let f = disk.open(Path::new("/d/a")).unwrap();
        disk.sync_dir(Path::new("/")).unwrap();
        disk.sync_dir(Path::new("/d")).unwrap();
        f.write_all_at(&[7u8; 2048], 100).unwrap();
        disk.crash();
        let got = disk.read(Path::new("/d/a")).unwrap();
        assert!(got.len() <= 2048 + 100);
        assert_eq!((got.len() as u64) % SECTOR, 0, "cut at a sector boundary");
        assert_eq!(disk.counts().torn_writes, 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let run = |seed| {
            let disk = SimDisk::new(
                seed,
                Faults {
                    p_bit_flip: 0.5,
                    p_enospc: 0.3,
                    ..no_faults()
                },
            );
            disk.create_dir_all(Path::new("/d")).unwrap();
            let f = disk.open(Path::new("/d/a")).unwrap();
            let mut out = Vec::new();
            for i in 0..50u64 {
                out.push(f.write_all_at(&[1u8; 1500], i * 1500).is_ok());
                let mut b = [0u8; 8];
                if f.read_exact_at(&mut b, 0).is_ok() {
                    out.extend(b.iter().map(|x| *x == 1));
                }
            }
            (out, disk.counts())
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9).0, run(10).0);
    }
}
