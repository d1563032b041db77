//! The single-file format of [`InMemoryStore::save`](crate::InMemoryStore::save) and its atomic writer.
//!
//! Layout (all integers little endian):
//!
//! | offset | size | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `CATENAVS` |
//! | 8 | 4 | format version, `u32` ([`FORMAT_VERSION`]) |
//! | 12 | 1 | metric: 0 cosine, 1 dot, 2 l2 |
//! | 13 | 3 | reserved, zero |
//! | 16 | 4 | dimension, `u32` |
//! | 20 | 8 | document count `n`, `u64` |
//! | 28 | 4 | embedder model name length `m`, `u32`; `0xFFFF_FFFF` when no name is recorded |
//! | 32 | m | embedder model name, UTF-8 |
//! | 32+m | 8 | documents JSON length `j`, `u64` |
//! | 40+m | j | documents: a JSON array of `catena_core::Document` in row order |
//! | 40+m+j | 4·n·dim | vectors: `f32`, row-major, row `i` belongs to document `i` |
//! | end−4 | 4 | CRC-32 (IEEE) of every preceding byte |

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use catena_core::{Document, Error, Result};

use crate::memory::State;
use crate::Metric;

/// The file format version this build writes and reads. Files of any other version fail to load with
/// [`Error::Format`](catena_core::Error::Format).
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"CATENAVS";
const NO_MODEL: u32 = u32::MAX;
/// Bytes before the model name.
const FIXED_HEADER: usize = 32;

fn metric_code(metric: Metric) -> u8 {
    match metric {
        Metric::Cosine => 0,
        Metric::Dot => 1,
        Metric::L2 => 2,
    }
}

fn metric_from_code(code: u8) -> Option<Metric> {
    match code {
        0 => Some(Metric::Cosine),
        1 => Some(Metric::Dot),
        2 => Some(Metric::L2),
        _ => None,
    }
}

/// A writer that keeps a running CRC-32 of everything written through it.
struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Deletes the temporary file on drop unless the save succeeded.
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = fs::remove_file(path);
        }
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The directory holding `path` and a fresh temporary file name beside it (same directory, so the final rename
/// stays on one file system).
fn temp_sibling(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let file_name = path.file_name().ok_or_else(|| {
        Error::InvalidInput(format!("cannot save a vector store to {}: the path names no file", path.display()))
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.{}.tmp", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)));
    let tmp_path = dir.join(tmp_name);
    Ok((dir, tmp_path))
}

/// Removes temporary files of earlier saves of `path` whose process is gone (killed mid-save), so they do not pile
/// up. A temporary file of a live process (another save under way) is left alone; where liveness cannot be
/// checked (no `/proc`), only files older than a day are removed.
fn sweep_stale_temps(dir: &Path, path: &Path) {
    let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { return };
    let prefix = format!(".{file_name}.");
    let Ok(entries) = fs::read_dir(dir) else { return };
    let proc_fs = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(middle) = name.strip_prefix(&prefix).and_then(|rest| rest.strip_suffix(".tmp")) else { continue };
        let Some(pid) = middle.split('.').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let stale = if proc_fs {
            !Path::new("/proc").join(pid.to_string()).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(86_400))
        };
        if stale {
            match fs::remove_file(entry.path()) {
                Ok(()) => {
                    tracing::info!(file = %entry.path().display(), "removed a temporary file of an interrupted save")
                }
                Err(e) => {
                    tracing::warn!(file = %entry.path().display(), error = %e, "could not remove a stale temporary file")
                }
            }
        }
    }
}

pub(crate) fn save(path: &Path, dim: usize, metric: Metric, state: &State) -> Result<()> {
    let (dir, tmp_path) = temp_sibling(path)?;
    sweep_stale_temps(&dir, path);
    let file = OpenOptions::new().write(true).create_new(true).open(&tmp_path).map_err(|e| Error::io(&tmp_path, e))?;
    let mut guard = TempFile { path: Some(tmp_path.clone()) };
    let mut w = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    write_body(&mut w, dim, metric, state).map_err(|e| match e {
        BodyError::Io(e) => Error::io(&tmp_path, e),
        BodyError::Json(e) => Error::Json(e),
    })?;
    let crc = w.crc.clone().finalize();
    let mut buffered = w.inner;
    buffered.write_all(&crc.to_le_bytes()).map_err(|e| Error::io(&tmp_path, e))?;
    let file = buffered.into_inner().map_err(|e| Error::io(&tmp_path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&tmp_path, e))?;
    drop(file);
    fs::rename(&tmp_path, path).map_err(|e| Error::io(path, e))?;
    guard.path = None;
    #[cfg(unix)]
    {
        // Persist the rename itself: fsync the directory entry.
        File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(&dir, e))?;
    }
    Ok(())
}

enum BodyError {
    Io(io::Error),
    Json(serde_json::Error),
}

impl From<io::Error> for BodyError {
    fn from(e: io::Error) -> Self {
        BodyError::Io(e)
    }
}

fn write_body<W: Write>(w: &mut W, dim: usize, metric: Metric, state: &State) -> std::result::Result<(), BodyError> {
    let dim32 = u32::try_from(dim).map_err(|_| io::Error::other("dimension does not fit in 32 bits"))?;
    w.write_all(MAGIC)?;
    w.write_all(&FORMAT_VERSION.to_le_bytes())?;
    w.write_all(&[metric_code(metric), 0, 0, 0])?;
    w.write_all(&dim32.to_le_bytes())?;
    w.write_all(&(state.docs.len() as u64).to_le_bytes())?;
    match &state.embedder_model {
        Some(name) => {
            let len = u32::try_from(name.len())
                .ok()
                .filter(|&l| l != NO_MODEL)
                .ok_or_else(|| io::Error::other("embedder model name is longer than 4 GiB"))?;
            w.write_all(&len.to_le_bytes())?;
            w.write_all(name.as_bytes())?;
        }
        None => w.write_all(&NO_MODEL.to_le_bytes())?,
    }
    let json = serde_json::to_vec(&state.docs).map_err(BodyError::Json)?;
    w.write_all(&(json.len() as u64).to_le_bytes())?;
    w.write_all(&json)?;
    let mut buf = Vec::with_capacity(64 * 1024);
    for chunk in state.vectors.chunks(16 * 1024) {
        buf.clear();
        for x in chunk {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        w.write_all(&buf)?;
    }
    Ok(())
}

/// What a file held.
pub(crate) struct Loaded {
    pub(crate) dim: usize,
    pub(crate) metric: Metric,
    pub(crate) state: State,
}

pub(crate) fn load(path: &Path) -> Result<Loaded> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|message| Error::Format { path: path.to_path_buf(), message })
}

const REMEDY: &str = "restore it from a backup or delete it and re-index";

fn truncated(actual: usize, expected: Option<usize>) -> String {
    match expected {
        Some(e) => format!(
            "is truncated or its header is corrupt: the header describes {e} bytes but the file has {actual} \
             (was a save or copy interrupted?); {REMEDY}"
        ),
        None => format!("is truncated: {actual} bytes is too short for a vector store header; {REMEDY}"),
    }
}

/// A bounds-checked cursor over the file.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            // Best guess of the full size: what we know is needed so far plus the checksum.
            truncated(self.bytes.len(), self.pos.checked_add(n).and_then(|e| e.checked_add(4)))
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> std::result::Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> std::result::Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

fn parse(bytes: &[u8]) -> std::result::Result<Loaded, String> {
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] || bytes.is_empty() {
        return Err(format!(
            "is not a catena vector store: it does not start with the {:?} magic bytes; pass a file written by \
             InMemoryStore::save",
            std::str::from_utf8(MAGIC).unwrap_or_default()
        ));
    }
    let mut c = Cursor { bytes, pos: MAGIC.len() };
    let version = c.u32()?;
    if version != FORMAT_VERSION {
        let hint = if version > FORMAT_VERSION {
            "it was written by a newer catena-vectorstores: upgrade catena-vectorstores, or re-index"
        } else {
            "no catena release writes that version, so the file is corrupt; re-index"
        };
        return Err(format!(
            "uses vector store format version {version}, but this build reads version {FORMAT_VERSION} only; {hint}"
        ));
    }
    let flags = c.take(4)?;
    let metric_byte = flags[0];
    let dim = c.u32()? as usize;
    let count = c.u64()?;
    let model_len = c.u32()?;
    let model_bytes = if model_len == NO_MODEL { None } else { Some(c.take(model_len as usize)?) };
    let json_len = c.u64()?;
    debug_assert!(c.pos >= FIXED_HEADER);

    let corrupt = |what: &str| format!("is corrupt: {what}; {REMEDY}");
    let sizes = usize::try_from(count).ok().and_then(|n| {
        let floats = n.checked_mul(dim)?;
        let vec_bytes = floats.checked_mul(4)?;
        let json = usize::try_from(json_len).ok()?;
        let total = c.pos.checked_add(json)?.checked_add(vec_bytes)?.checked_add(4)?;
        Some((n, json, vec_bytes, total))
    });
    let Some((count, json_len, vec_bytes, total)) = sizes else {
        return Err(corrupt(&format!("its header describes an impossible size ({count} documents of {dim} values)")));
    };
    if bytes.len() < total {
        return Err(truncated(bytes.len(), Some(total)));
    }
    if bytes.len() > total {
        return Err(corrupt(&format!("{} unexpected bytes follow the data", bytes.len() - total)));
    }
    let (body, trailer) = bytes.split_at(total - 4);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(corrupt(&format!("checksum mismatch (stored {stored:08x}, computed {computed:08x})")));
    }

    // The checksum matched, so what follows only fails for files written by a buggy or foreign writer.
    let metric = metric_from_code(metric_byte).ok_or_else(|| corrupt(&format!("unknown metric code {metric_byte}")))?;
    if dim == 0 {
        return Err(corrupt("its dimension is 0"));
    }
    let embedder_model = match model_bytes {
        Some(b) => {
            Some(String::from_utf8(b.to_vec()).map_err(|_| corrupt("the embedder model name is not valid UTF-8"))?)
        }
        None => None,
    };
    let json = c.take(json_len)?;
    let docs: Vec<Document> =
        serde_json::from_slice(json).map_err(|e| corrupt(&format!("its documents are not valid JSON ({e})")))?;
    if docs.len() != count {
        return Err(corrupt(&format!("the header says {count} documents but {} are stored", docs.len())));
    }
    let mut slot_of = HashMap::with_capacity(count);
    for (slot, d) in docs.iter().enumerate() {
        if slot_of.insert(d.id.clone(), slot).is_some() {
            return Err(corrupt(&format!("document id {:?} appears twice", d.id)));
        }
    }
    let raw = c.take(vec_bytes)?;
    let mut vectors = crate::block::with_capacity(count * dim);
    vectors.extend(raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    if let Some(i) = vectors.iter().position(|x| !x.is_finite()) {
        return Err(corrupt(&format!("document {:?} has a non-finite vector component", docs[i / dim].id)));
    }
    Ok(Loaded { dim, metric, state: State { embedder_model, vectors, docs, slot_of } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_of_dead_processes_are_swept_on_save() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("index.catena");
        // pid 0 is never a user process; the other file belongs to this (live) process.
        let dead = dir.path().join(".index.catena.0.7.tmp");
        let live = dir.path().join(format!(".index.catena.{}.999.tmp", std::process::id()));
        let unrelated = dir.path().join(".other.catena.0.1.tmp");
        for f in [&dead, &live, &unrelated] {
            fs::write(f, b"partial").unwrap();
        }
        save(&target, 3, Metric::Cosine, &State::default()).unwrap();
        assert!(!dead.exists(), "a dead process's temporary file stays");
        assert!(live.exists() && unrelated.exists());
    }

    #[test]
    fn temp_files_sit_beside_the_target() {
        let (dir, tmp) = temp_sibling(Path::new("index.catena")).unwrap();
        assert_eq!(dir, Path::new("."));
        assert_eq!(tmp.parent(), Some(Path::new(".")));
        let name = tmp.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".index.catena.") && name.ends_with(".tmp"), "{name}");
        let (dir, tmp2) = temp_sibling(Path::new("/data/x/index.catena")).unwrap();
        assert_eq!(dir, Path::new("/data/x"));
        assert_eq!(tmp2.parent(), Some(Path::new("/data/x")));
        assert_ne!(tmp.file_name(), tmp2.file_name(), "every save gets its own temporary name");
        assert!(temp_sibling(Path::new("/")).is_err());
        assert!(temp_sibling(Path::new("a/..")).is_err());
    }
}
