//! safetensors checkpoint → packed file. The output appears under its final name only once it is
//! complete and checksummed: it is written to a hidden temporary file beside it and renamed.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::ModelConfig;
use crate::format;
use crate::layout::{self, LayerPart, PAYLOAD_ALIGN, TensorEntry, TensorId};

/// Why packing failed. Nothing is left at the output path when it does.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot write the packed weights to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reported after each tensor is written.
#[derive(Debug, Clone)]
pub struct PackProgress {
    pub tensor: TensorId,
    pub tensors_done: usize,
    pub tensors_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What [`pack_safetensors`] wrote.
#[derive(Debug, Clone)]
pub struct PackSummary {
    pub path: PathBuf,
    pub config: ModelConfig,
    /// The safetensors files read.
    pub sources: Vec<PathBuf>,
    pub tensors: usize,
    pub payload_offset: u64,
    pub payload_bytes: u64,
    pub file_bytes: u64,
    pub payload_checksum: u64,
    /// A tied checkpoint that also stored `lm_head.weight`: the copy was not used (the
    /// embedding is the LM head, as in transformers).
    pub ignored_lm_head: bool,
}

/// Packs the checkpoint in `model_dir` (`config.json` + safetensors) into `out_path`.
/// `progress` is called after every tensor.
pub fn pack_safetensors(
    model_dir: &Path,
    out_path: &Path,
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    // 1. Open and check the whole checkpoint before creating any file.
    let checkpoint = Checkpoint::open(model_dir)?;
    let config = checkpoint.config().clone();
    let mut summary = write_packed(
        &config,
        out_path,
        |entry, payload| write_tensor(&checkpoint, entry, payload),
        progress,
    )?;
    summary.sources = checkpoint.files().iter().map(|p| p.to_path_buf()).collect();
    summary.ignored_lm_head = config.tie_word_embeddings && checkpoint.contains("lm_head.weight");
    Ok(summary)
}

/// Packs tensors that `fill` computes instead of reading a checkpoint: for each entry of the
/// layout (in storage order, shapes in [`TensorEntry::shape`]) it appends exactly
/// `entry.len` bytes of little-endian BF16 values to the buffer it is given. Used for random
/// weights of the real shapes (see [`crate::synthetic::pack_random`]), which need no
/// safetensors copy in between.
pub fn pack_generated(
    config: &ModelConfig,
    out_path: &Path,
    mut fill: impl FnMut(&TensorEntry, &mut Vec<u8>),
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    let mut buffer = Vec::new();
    write_packed(
        config,
        out_path,
        |entry, payload| {
            buffer.clear();
            fill(entry, &mut buffer);
            if buffer.len() as u64 != entry.len {
                return Err(TensorWriteError::Io(std::io::Error::other(format!(
                    "the generator gave {} bytes for {} but the layout needs {}",
                    buffer.len(),
                    entry.id,
                    entry.len
                ))));
            }
            payload.pad_to(entry.offset)?;
            payload.write(&buffer)?;
            Ok(())
        },
        progress,
    )
}

/// The packed file's frame around the tensors: plans the layout, writes each tensor through
/// `write_entry` into a temporary file while hashing it, then the header, and renames the file
/// into place. `sources` and `ignored_lm_head` of the summary are left for the caller.
fn write_packed(
    config: &ModelConfig,
    out_path: &Path,
    mut write_entry: impl FnMut(&TensorEntry, &mut PayloadWriter) -> Result<(), TensorWriteError>,
    mut progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    let table = layout::plan(config);
    let payload_len = layout::payload_len(&table);
    let json_len = config.to_json_string().len();
    let payload_offset = layout::align_up(
        format::header_len(table.len(), json_len) as u64,
        PAYLOAD_ALIGN,
    );

    // 2. Write the payload to a temporary file, hashing as it goes.
    let mut temp = TempFile::create(out_path)?;
    let write_err = |source| PackError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let mut payload = PayloadWriter {
        out: BufWriter::with_capacity(1 << 20, temp.file()?),
        hasher: Xxh3::new(),
        written: 0,
    };
    payload
        .out
        .seek(SeekFrom::Start(payload_offset))
        .map_err(write_err)?;
    for (done, entry) in table.iter().enumerate() {
        write_entry(entry, &mut payload).map_err(|e| match e {
            TensorWriteError::Io(source) => write_err(source),
            TensorWriteError::Checkpoint(e) => PackError::Checkpoint(e),
        })?;
        debug_assert_eq!(payload.written, entry.offset + entry.len);
        progress(&PackProgress {
            tensor: entry.id,
            tensors_done: done + 1,
            tensors_total: table.len(),
            bytes_done: entry.offset + entry.len,
            bytes_total: payload_len,
        });
    }
    debug_assert_eq!(payload.written, payload_len);
    let payload_checksum = payload.hasher.digest();

    // 3. The header last, now that the checksum is known; then make it durable and visible.
    let header = format::encode(
        config,
        &table,
        payload_offset,
        payload_len,
        payload_checksum,
    );
    let mut out = payload.out;
    out.seek(SeekFrom::Start(0)).map_err(write_err)?;
    out.write_all(&header).map_err(write_err)?;
    let file = out.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    drop(file);
    temp.persist()?;

    Ok(PackSummary {
        path: out_path.to_path_buf(),
        sources: Vec::new(),
        tensors: table.len(),
        payload_offset,
        payload_bytes: payload_len,
        file_bytes: payload_offset + payload_len,
        payload_checksum,
        ignored_lm_head: false,
        config: config.clone(),
    })
}

enum TensorWriteError {
    Io(std::io::Error),
    Checkpoint(CheckpointError),
}

impl From<std::io::Error> for TensorWriteError {
    fn from(e: std::io::Error) -> Self {
        TensorWriteError::Io(e)
    }
}

impl From<CheckpointError> for TensorWriteError {
    fn from(e: CheckpointError) -> Self {
        TensorWriteError::Checkpoint(e)
    }
}

/// Writes one packed tensor at its planned offset, combining source tensors as the layout says.
fn write_tensor(
    checkpoint: &Checkpoint,
    entry: &TensorEntry,
    out: &mut PayloadWriter,
) -> Result<(), TensorWriteError> {
    out.pad_to(entry.offset)?;
    let sources = checkpoint
        .sources(entry.id)
        .into_iter()
        .map(|(name, shape)| checkpoint.tensor_bytes(&name, &shape))
        .collect::<Result<Vec<&[u8]>, _>>()?;
    match (entry.id, sources.as_slice()) {
        // gate row j, then up row j: one warp later reads both rows it needs side by side.
        (
            TensorId::Layer {
                part: LayerPart::GateUp,
                ..
            },
            [gate, up],
        ) => {
            let row_bytes = checkpoint.config().hidden_size * 2;
            for (gate_row, up_row) in gate.chunks(row_bytes).zip(up.chunks(row_bytes)) {
                out.write(gate_row)?;
                out.write(up_row)?;
            }
        }
        // Everything else is its sources' rows one after another (q, k, v for the fused QKV).
        (_, parts) => {
            for part in parts {
                out.write(part)?;
            }
        }
    }
    debug_assert_eq!(out.written, entry.offset + entry.len);
    Ok(())
}

/// Streams payload bytes to the file and into the checksum.
struct PayloadWriter {
    out: BufWriter<File>,
    hasher: Xxh3,
    /// Payload bytes written so far.
    written: u64,
}

impl PayloadWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Zero padding up to a tensor's aligned offset; part of the checksummed payload.
    fn pad_to(&mut self, offset: u64) -> std::io::Result<()> {
        const ZEROS: [u8; layout::TENSOR_ALIGN as usize] = [0; layout::TENSOR_ALIGN as usize];
        while self.written < offset {
            let n = (offset - self.written).min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n])?;
        }
        Ok(())
    }
}

/// A hidden file beside the target, removed on drop unless [`TempFile::persist`] renamed it.
struct TempFile {
    temp: PathBuf,
    target: PathBuf,
    file: Option<File>,
    persisted: bool,
}

impl TempFile {
    fn create(target: &Path) -> Result<Self, PackError> {
        let err = |source| PackError::Write {
            path: target.to_path_buf(),
            source,
        };
        let name = target.file_name().ok_or_else(|| {
            err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the output path names a directory, not a file",
            ))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".partial-{}", std::process::id()));
        let temp = target.with_file_name(temp_name);
        let file = File::create(&temp).map_err(err)?;
        Ok(TempFile {
            temp,
            target: target.to_path_buf(),
            file: Some(file),
            persisted: false,
        })
    }

    fn file(&mut self) -> Result<File, PackError> {
        self.file.take().ok_or_else(|| PackError::Write {
            path: self.target.clone(),
            source: std::io::Error::other("temporary file already taken"),
        })
    }

    fn persist(&mut self) -> Result<(), PackError> {
        std::fs::rename(&self.temp, &self.target).map_err(|source| PackError::Write {
            path: self.target.clone(),
            source,
        })?;
        self.persisted = true;
        // Make the rename itself durable; failing to is not worth failing the pack over.
        if let Some(dir) = self.target.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(dir) = File::open(dir)
        {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}
