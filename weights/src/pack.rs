//! safetensors checkpoint → packed file. The output appears under its final name only once it is
//! complete and checksummed: it is written to a hidden temporary file beside it and renamed.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::config::ModelConfig;
use crate::format::{self, Attachment};
use crate::layout::{self, LayerPart, PAYLOAD_ALIGN, TensorEntry, TensorId};
use crate::partial::PartialFile;

/// Files of a checkpoint directory that a packed file carries, when they exist, so that it runs
/// with nothing beside it: the tokenizer, the chat template (in `tokenizer_config.json`, or in
/// `chat_template.jinja` for newer checkpoints) and the generation config (stop tokens,
/// sampling defaults).
pub const MODEL_FILES: [&str; 4] = [
    TOKENIZER_FILE,
    TOKENIZER_CONFIG_FILE,
    CHAT_TEMPLATE_FILE,
    GENERATION_CONFIG_FILE,
];
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

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
    #[error("cannot read {}, which the packed file would carry: {source}", path.display())]
    ReadModelFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pack {}: {reason}", path.display())]
    Attachments { path: PathBuf, reason: String },
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
    /// Names of the files carried in the header, in storage order.
    pub attachments: Vec<String>,
}

/// Packs the checkpoint in `model_dir` (`config.json` + safetensors) into `out_path`, carrying
/// those of [`MODEL_FILES`] that the directory has. `progress` is called after every tensor.
pub fn pack_safetensors(
    model_dir: &Path,
    out_path: &Path,
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    pack_safetensors_with(model_dir, out_path, Vec::new(), progress)
}

/// [`pack_safetensors`] with more files to carry (after the model's own), such as a record of
/// where the checkpoint came from.
pub fn pack_safetensors_with(
    model_dir: &Path,
    out_path: &Path,
    extra: Vec<Attachment>,
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    // 1. Open and check the whole checkpoint before creating any file.
    let checkpoint = Checkpoint::open(model_dir)?;
    let config = checkpoint.config().clone();
    let mut attachments = model_files(model_dir)?;
    attachments.extend(extra);
    let mut summary = write_packed(
        &config,
        out_path,
        &attachments,
        |entry, payload| write_tensor(&checkpoint, entry, payload),
        progress,
    )?;
    summary.sources = checkpoint.files().iter().map(|p| p.to_path_buf()).collect();
    summary.ignored_lm_head = config.tie_word_embeddings && checkpoint.contains("lm_head.weight");
    Ok(summary)
}

/// The files of [`MODEL_FILES`] that `dir` has. Symlinks are followed (a hub snapshot is made
/// of them); a file that exists but cannot be read is an error, not a silent omission.
pub fn model_files(dir: &Path) -> Result<Vec<Attachment>, PackError> {
    let mut found = Vec::new();
    for name in MODEL_FILES {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => found.push(Attachment {
                name: name.to_owned(),
                bytes,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(PackError::ReadModelFile { path, source }),
        }
    }
    Ok(found)
}

/// Packs tensors that `fill` computes instead of reading a checkpoint: for each entry of the
/// layout (in storage order, shapes in [`TensorEntry::shape`]) it appends exactly
/// `entry.len` bytes of little-endian BF16 values to the buffer it is given. Used for random
/// weights of the real shapes (see [`crate::synthetic::pack_random`]), which need no
/// safetensors copy in between. `attachments` are carried in the header.
pub fn pack_generated(
    config: &ModelConfig,
    out_path: &Path,
    attachments: &[Attachment],
    mut fill: impl FnMut(&TensorEntry, &mut Vec<u8>),
    progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    let mut buffer = Vec::new();
    write_packed(
        config,
        out_path,
        attachments,
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
    attachments: &[Attachment],
    mut write_entry: impl FnMut(&TensorEntry, &mut PayloadWriter) -> Result<(), TensorWriteError>,
    mut progress: impl FnMut(&PackProgress),
) -> Result<PackSummary, PackError> {
    let attachment_err = |reason: String| PackError::Attachments {
        path: out_path.to_path_buf(),
        reason,
    };
    format::check_attachments(attachments).map_err(attachment_err)?;
    let table = layout::plan(config);
    let payload_len = layout::payload_len(&table);
    let json_len = config.to_json_string().len();
    let header_len = format::header_len(table.len(), json_len, attachments);
    if u32::try_from(header_len).is_err() {
        return Err(attachment_err(format!(
            "the attached files make a header of {header_len} bytes, more than the format's 4 GiB"
        )));
    }
    let payload_offset = layout::align_up(header_len as u64, PAYLOAD_ALIGN);

    // 2. Write the payload to a temporary file, hashing as it goes.
    let write_err = |source| PackError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let mut temp = PartialFile::create(out_path).map_err(write_err)?;
    let mut payload = PayloadWriter {
        out: BufWriter::with_capacity(1 << 20, temp.take_file().map_err(write_err)?),
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
        attachments,
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
    temp.persist().map_err(write_err)?;

    Ok(PackSummary {
        path: out_path.to_path_buf(),
        sources: Vec::new(),
        tensors: table.len(),
        payload_offset,
        payload_bytes: payload_len,
        file_bytes: payload_offset + payload_len,
        payload_checksum,
        ignored_lm_head: false,
        attachments: attachments.iter().map(|a| a.name.clone()).collect(),
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
