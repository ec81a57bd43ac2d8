//! Writing an output file without destroying anything else.
//!
//! Tools that write models (`quantize`, `synth`) produce hundreds of MB over minutes, often from an
//! input memory-mapped beside the output. [`OutputFile`] makes that safe:
//!
//! - the output is checked before any work: an existing output must be a regular file and must
//!   not be one of the inputs (compared as files, by device and inode, so `./in.gguf`, a hard
//!   link or a symbolic link to the input are all refused); its directory must exist;
//! - the bytes go to a new temporary file beside the output, created with create-new (`O_EXCL`)
//!   semantics under a name no other run uses, so nothing that already exists is truncated;
//! - [`OutputFile::commit`] syncs it and renames it over the output only when it is complete;
//!   until then the output path is untouched, and two runs writing the same output each leave a
//!   whole file (the last rename wins);
//! - a temporary file that is not committed is removed when the `OutputFile` is dropped (every
//!   error path), and [`remove_pending`] removes those of every live `OutputFile`, for a signal
//!   handler to call before the process exits.
//!
//! An output path that is a symbolic link is itself replaced by the new file (as `sed -i` and
//! `mv` do), so no file but the named one changes; a link that leads to an input is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Why an output cannot be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    #[error("{}: {what}", path.display())]
    Refused { path: PathBuf, what: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Temporary files of live [`OutputFile`]s, for [`remove_pending`].
static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Removes the temporary files of every uncommitted [`OutputFile`] and keeps later commits from
/// renaming them into place. Meant for a signal handler that then ends the process: the lock it
/// takes is held until the process exits, so a commit racing with the signal either finished
/// before it (its output is complete) or never renames.
pub fn remove_pending() {
    let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    for p in pending.drain(..) {
        let _ = std::fs::remove_file(&p);
    }
    std::mem::forget(pending);
}

/// A file being written to a temporary name beside its final path; see the module docs.
pub struct OutputFile {
    target: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
}

impl OutputFile {
    /// Checks `output` (against `inputs` too: it must not be any of them) and creates the
    /// temporary file beside it.
    pub fn create(output: &Path, inputs: &[&Path]) -> Result<OutputFile, OutputError> {
        let target = check_output(output, inputs)?;
        let dir = match target.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| refused(output, "the output must name a file"))?;
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        for _ in 0..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = dir.join(format!(
                ".{name}.{}-{}-{nanos:08x}.partial",
                std::process::id(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            match OpenOptions::new().write(true).create_new(true).open(&tmp) {
                Ok(file) => {
                    pending.push(tmp.clone());
                    return Ok(OutputFile {
                        target,
                        tmp,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(OutputError::Io {
                        path: output.to_path_buf(),
                        source,
                    })
                }
            }
        }
        Err(refused(
            output,
            "could not create a temporary file beside it",
        ))
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The temporary file being written.
    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// The file behind a 1 MiB write buffer, for [`OutputFile::commit_buffered`].
    pub fn buffered(self) -> io::BufWriter<OutputFile> {
        io::BufWriter::with_capacity(1 << 20, self)
    }

    /// Flushes the buffer, then [`OutputFile::commit`].
    pub fn commit_buffered(out: io::BufWriter<OutputFile>) -> Result<(), crate::GgufError> {
        let file = out
            .into_inner()
            .map_err(|e| crate::GgufError::Write(e.into_error()))?;
        Ok(file.commit()?)
    }

    /// Syncs the temporary file and renames it over the output.
    pub fn commit(mut self) -> Result<(), OutputError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| OutputError::Io { path, source }
        };
        let file = self.file.take().expect("an OutputFile is committed once");
        file.sync_all().map_err(io_err(&self.target))?;
        drop(file);
        // The output may have changed while we worked (a directory or FIFO put there).
        if let Ok(meta) = std::fs::symlink_metadata(&self.target) {
            if !meta.file_type().is_file() && !meta.file_type().is_symlink() {
                return Err(refused(&self.target, &not_regular(&meta)));
            }
        }
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = pending.iter().position(|p| *p == self.tmp) else {
            // remove_pending ran: the process is going away.
            return Err(refused(&self.target, "interrupted"));
        };
        std::fs::rename(&self.tmp, &self.target).map_err(io_err(&self.target))?;
        pending.swap_remove(i);
        drop(pending);
        // Make the rename itself durable (best effort: not every file system syncs directories).
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("not committed").flush()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        drop(self.file.take());
        // Still listed: not renamed into place, so it is ours to remove.
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pending.iter().position(|p| *p == self.tmp) {
            pending.swap_remove(i);
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

fn refused(path: &Path, what: &str) -> OutputError {
    OutputError::Refused {
        path: path.to_path_buf(),
        what: what.to_string(),
    }
}

fn not_regular(meta: &std::fs::Metadata) -> String {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        "a directory"
    } else if is_special(&ft) {
        "a device, FIFO or socket"
    } else {
        "not a regular file"
    };
    format!("the output exists and is {kind}; give a path for a regular file")
}

#[cfg(unix)]
fn is_special(ft: &std::fs::FileType) -> bool {
    use std::os::unix::fs::FileTypeExt;
    ft.is_fifo() || ft.is_char_device() || ft.is_block_device() || ft.is_socket()
}

#[cfg(not(unix))]
fn is_special(_: &std::fs::FileType) -> bool {
    false
}

/// Checks `output` before any work: an existing output must be a regular file or a symbolic
/// link (replaced, not followed), and neither it nor the file a link leads to may be an input;
/// its directory must exist. Returns the path to rename over.
fn check_output(output: &Path, inputs: &[&Path]) -> Result<PathBuf, OutputError> {
    if output.as_os_str().is_empty() {
        return Err(refused(output, "the output path is empty"));
    }
    match std::fs::symlink_metadata(output) {
        Ok(meta) => {
            let ft = meta.file_type();
            if !ft.is_file() && !ft.is_symlink() {
                return Err(refused(output, &not_regular(&meta)));
            }
            // The file itself, and the one a link leads to (if any), must not be an input.
            let mut named = vec![meta];
            if ft.is_symlink() {
                if let Ok(m) = std::fs::metadata(output) {
                    named.push(m);
                }
            }
            for input in inputs {
                let Ok(im) = std::fs::metadata(input) else {
                    continue;
                };
                if named.iter().any(|m| same_file(m, &im, output, input)) {
                    return Err(refused(
                        output,
                        &format!(
                            "the output is the input file {} (give another output path)",
                            input.display()
                        ),
                    ));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(OutputError::Io {
                path: output.to_path_buf(),
                source,
            })
        }
    }
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(output.to_path_buf()),
        Ok(_) => Err(refused(output, "its parent is not a directory")),
        Err(_) => Err(refused(
            output,
            &format!("the directory {} does not exist", dir.display()),
        )),
    }
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata, _: &Path, _: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata, a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_beside_and_renames_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.gguf");
        std::fs::write(&out, b"old").unwrap();
        let mut f = OutputFile::create(&out, &[]).unwrap();
        f.write_all(b"new contents").unwrap();
        assert_eq!(
            std::fs::read(&out).unwrap(),
            b"old",
            "untouched until commit"
        );
        assert_eq!(names(dir.path()).len(), 2);
        f.commit().unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"new contents");
        assert_eq!(names(dir.path()), ["out.gguf"]);
    }

    #[test]
    fn dropped_output_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.gguf");
        let mut f = OutputFile::create(&out, &[]).unwrap();
        f.write_all(b"partial").unwrap();
        drop(f);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn an_existing_partial_name_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.gguf");
        let other = dir.path().join("out.gguf.partial");
        std::fs::write(&other, b"someone else's").unwrap();
        let mut f = OutputFile::create(&out, &[]).unwrap();
        f.write_all(b"x").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&other).unwrap(), b"someone else's");
    }

    #[test]
    fn the_input_is_refused_however_it_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.gguf");
        std::fs::write(&input, b"model").unwrap();
        let dotted = dir.path().join(".").join("in.gguf");
        let hard = dir.path().join("hard.gguf");
        std::fs::hard_link(&input, &hard).unwrap();
        let mut cases = vec![input.clone(), dotted, hard];
        #[cfg(unix)]
        {
            let soft = dir.path().join("soft.gguf");
            std::os::unix::fs::symlink(&input, &soft).unwrap();
            cases.push(soft);
        }
        for out in cases {
            let e = OutputFile::create(&out, &[&input]).err().expect("refused");
            assert!(e.to_string().contains("is the input file"), "{e}");
        }
        assert_eq!(std::fs::read(&input).unwrap(), b"model");
    }

    #[test]
    fn non_regular_outputs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let e = OutputFile::create(dir.path(), &[]).err().unwrap();
        assert!(e.to_string().contains("a directory"), "{e}");
        let e = OutputFile::create(&dir.path().join("no/such/x.gguf"), &[])
            .err()
            .unwrap();
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_symlinked_output_is_replaced_and_its_target_kept() {
        #[cfg(unix)]
        {
            let dir = tempfile::tempdir().unwrap();
            let real = dir.path().join("real.gguf");
            std::fs::write(&real, b"old").unwrap();
            let link = dir.path().join("link.gguf");
            std::os::unix::fs::symlink(&real, &link).unwrap();
            let dangling = dir.path().join("dangling.gguf");
            std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
            for out in [&link, &dangling] {
                let mut f = OutputFile::create(out, &[]).unwrap();
                f.write_all(b"new").unwrap();
                f.commit().unwrap();
                let meta = std::fs::symlink_metadata(out).unwrap();
                assert!(meta.file_type().is_file(), "{out:?} is now a file");
                assert_eq!(std::fs::read(out).unwrap(), b"new");
            }
            assert_eq!(std::fs::read(&real).unwrap(), b"old");
            assert!(!dir.path().join("nowhere").exists());
        }
    }
}
