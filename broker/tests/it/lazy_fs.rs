//! A FUSE file system that loses what was not synced, on command: the idea of LazyFS, built on
//! the simulator's disk (`broker::sim::disk::SimDisk`, faults off). Every write stays in memory
//! until an `fsync` of its file, every new, renamed or removed name until an `fsync` of its
//! directory; [`LazyFs::power_cut`] unmounts, drops everything else, and mounts again. The real
//! `broker` binary runs on it unchanged, so a test can SIGKILL it, cut the power, restart it and
//! check what it acknowledged.
//!
//! Mounting needs `/dev/fuse` and the right to mount (root here): [`LazyFs::mount`] says why
//! when it cannot, and the caller skips its test.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use broker::sim::disk::{Faults, SimDisk, Stat};
use broker::storage::{Disk, FileRef};
use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

/// Nothing is cached by the kernel: every lookup and attribute comes from the disk model.
const TTL: Duration = Duration::ZERO;

/// Inode numbers for paths (FUSE speaks inodes, the disk model paths).
#[derive(Default)]
struct Inodes {
    path_of: HashMap<u64, PathBuf>,
    ino_of: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    fn ino(&mut self, path: &Path) -> u64 {
        if path == Path::new("/") {
            return 1;
        }
        if let Some(i) = self.ino_of.get(path) {
            return *i;
        }
        self.next = self.next.max(1) + 1;
        self.path_of.insert(self.next, path.to_path_buf());
        self.ino_of.insert(path.to_path_buf(), self.next);
        self.next
    }

    fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        let ino = u64::from(ino);
        if ino == 1 {
            return Some(PathBuf::from("/"));
        }
        self.path_of.get(&ino).cloned()
    }

    fn forget_path(&mut self, path: &Path) {
        if let Some(i) = self.ino_of.remove(path) {
            self.path_of.remove(&i);
        }
    }
}

struct SimFs {
    disk: SimDisk,
    inodes: Mutex<Inodes>,
    files: Mutex<HashMap<u64, FileRef>>,
    next_fh: Mutex<u64>,
}

fn errno(e: &std::io::Error) -> Errno {
    match e.kind() {
        std::io::ErrorKind::NotFound => Errno::ENOENT,
        _ => Errno::EIO,
    }
}

impl SimFs {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes.lock().unwrap().path(ino).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    fn attr(&self, path: &Path) -> Result<FileAttr, Errno> {
        let stat = self.disk.stat(path).ok_or(Errno::ENOENT)?;
        let ino = self.inodes.lock().unwrap().ino(path);
        let (kind, size, perm) = match stat {
            Stat::Dir => (FileType::Directory, 0, 0o755),
            Stat::File(size) => (FileType::RegularFile, size, 0o644),
        };
        Ok(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    fn handle(&self, file: FileRef) -> FileHandle {
        let mut next = self.next_fh.lock().unwrap();
        *next += 1;
        self.files.lock().unwrap().insert(*next, file);
        FileHandle(*next)
    }

    fn file(&self, fh: FileHandle) -> Result<FileRef, Errno> {
        self.files
            .lock()
            .unwrap()
            .get(&u64::from(fh))
            .cloned()
            .ok_or(Errno::EBADF)
    }
}

impl Filesystem for SimFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.attr(&p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).and_then(|p| self.attr(&p)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.path(ino).and_then(|p| {
            if let Some(len) = size {
                let f = self.disk.open(&p).map_err(|e| errno(&e))?;
                f.set_len(len).map_err(|e| errno(&e))?;
            }
            self.attr(&p)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.child(parent, name).and_then(|p| {
            self.disk.create_dir_all(&p).map_err(|e| errno(&e))?;
            self.attr(&p)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let result = self.child(parent, name).and_then(|p| {
            self.disk.remove_file(&p).map_err(|e| errno(&e))?;
            self.inodes.lock().unwrap().forget_path(&p);
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self.child(parent, name).and_then(|from| {
            let to = self.child(newparent, newname)?;
            self.disk.rename(&from, &to).map_err(|e| errno(&e))?;
            let mut inodes = self.inodes.lock().unwrap();
            inodes.forget_path(&to);
            if let Some(i) = inodes.ino_of.remove(&from) {
                inodes.path_of.insert(i, to.clone());
                inodes.ino_of.insert(to, i);
            }
            Ok(())
        });
        match result {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self
            .path(ino)
            .and_then(|p| self.disk.open(&p).map_err(|e| errno(&e)))
        {
            // Direct I/O: the kernel keeps no page cache of its own that a power cut would miss.
            Ok(f) => reply.opened(self.handle(f), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.child(parent, name).and_then(|p| {
            let f = self.disk.open(&p).map_err(|e| errno(&e))?;
            Ok((self.attr(&p)?, f))
        });
        match result {
            Ok((attr, f)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                self.handle(f),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.file(fh).and_then(|f| {
            let len = f.size().map_err(|e| errno(&e))?;
            let n = len.saturating_sub(offset).min(u64::from(size));
            let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
            if n > 0 {
                f.read_exact_at(&mut buf, offset).map_err(|e| errno(&e))?;
            }
            Ok(buf)
        });
        match result {
            Ok(buf) => reply.data(&buf),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .file(fh)
            .and_then(|f| f.write_all_at(data, offset).map_err(|e| errno(&e)))
        {
            Ok(()) => reply.written(u32::try_from(data.len()).unwrap_or(u32::MAX)),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.files.lock().unwrap().remove(&u64::from(fh));
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self
            .file(fh)
            .and_then(|f| f.sync_data().map_err(|e| errno(&e)))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let result = self.path(ino).and_then(|dir| {
            let mut names = self.disk.list(&dir).map_err(|e| errno(&e))?;
            names.sort();
            Ok((dir, names))
        });
        let (dir, names) = match result {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut entries = vec![
            (u64::from(ino), FileType::Directory, ".".to_string()),
            (1, FileType::Directory, "..".to_string()),
        ];
        for name in names {
            let path = dir.join(&name);
            let kind = match self.disk.stat(&path) {
                Some(Stat::Dir) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            let i = self.inodes.lock().unwrap().ino(&path);
            entries.push((i, kind, name));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self
            .path(ino)
            .and_then(|p| self.disk.sync_dir(&p).map_err(|e| errno(&e)))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

/// A mounted [`SimFs`] and its disk.
pub struct LazyFs {
    disk: SimDisk,
    dir: tempfile::TempDir,
    session: Option<BackgroundSession>,
}

impl LazyFs {
    /// Mounts an empty file system on a new temp dir; the error says why it cannot.
    pub fn mount() -> Result<Self, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse does not exist".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut fs = Self {
            disk: SimDisk::new(0, Faults::default()),
            dir,
            session: None,
        };
        fs.attach()?;
        Ok(fs)
    }

    fn attach(&mut self) -> Result<(), String> {
        let fs = SimFs {
            disk: self.disk.clone(),
            inodes: Mutex::default(),
            files: Mutex::default(),
            next_fh: Mutex::new(0),
        };
        let mut config = Config::default();
        config.mount_options = vec![MountOption::FSName("lazyfs".into())];
        let session = fuser::spawn_mount(fs, self.dir.path(), &config)
            .map_err(|e| format!("cannot mount a FUSE file system: {e}"))?;
        self.session = Some(session);
        Ok(())
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Unmounts, loses everything not synced, mounts again.
    pub fn power_cut(&mut self) -> Result<(), String> {
        if let Some(s) = self.session.take() {
            s.umount_and_join()
                .map_err(|e| format!("cannot unmount: {e}"))?;
        }
        self.disk.crash();
        self.attach()
    }

    /// Unsynced writes the power cuts dropped.
    pub fn lost_writes(&self) -> u64 {
        self.disk.counts().lost_writes
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if let Some(s) = self.session.take()
            && s.umount_and_join().is_err()
        {
            // Still busy (a process that has not quite exited): detach it, it goes once free.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
