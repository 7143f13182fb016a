//! Loading a packed file: mmap, verify everything (magic, version, header checksum, length,
//! config, tensor table, payload checksum), then hand out typed slices and payload offsets.

use std::fs::File;
use std::path::{Path, PathBuf};

use half::bf16;
use memmap2::Mmap;

use crate::config::{ConfigError, ModelConfig};
use crate::format::{self, FORMAT_VERSION, HeaderFault};
use crate::layout::{self, LayerPart, LayerTensors, PAYLOAD_ALIGN, TensorEntry, TensorId};

/// Why a packed file cannot be used. Every sentence names the file; most end by telling the
/// user to pack again, since the file is a derived artifact.
#[derive(Debug, thiserror::Error)]
pub enum PackedError {
    #[error("cannot read the packed weights {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a qwenmk packed weights file (it does not start with the qwenmk magic); create one with `qwenmk pack`", path.display())]
    NotPacked { path: PathBuf },
    #[error("{} uses packed format version {found}, but this qwenmk reads version {FORMAT_VERSION}: {}", path.display(), version_advice(*found))]
    UnknownVersion { path: PathBuf, found: u32 },
    #[error("{} is truncated: it should be {expected} bytes but is {found}; re-run `qwenmk pack`", path.display())]
    Truncated {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{} is {found} bytes but its header describes {expected}; the file was modified after packing; re-run `qwenmk pack`", path.display())]
    Oversized {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("the header of {} is corrupt (checksum mismatch); re-run `qwenmk pack`", path.display())]
    HeaderChecksum { path: PathBuf },
    #[error("the weights in {} are corrupt: their xxh3-64 checksum is {found:016x} but the header records {expected:016x}; re-run `qwenmk pack`", path.display())]
    PayloadChecksum {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
    #[error("{} is malformed: {reason}; re-run `qwenmk pack`", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("{} carries a model config qwenmk cannot use: {source}", path.display())]
    Config {
        path: PathBuf,
        #[source]
        source: ConfigError,
    },
}

/// What to do about a file of another format version.
fn version_advice(found: u32) -> &'static str {
    if found < FORMAT_VERSION {
        "it was written by an older qwenmk, before packed files carried their tokenizer, chat \
         template and generation config; re-run `qwenmk pack` on its checkpoint (`qwenmk rm \
         --stale` removes such files from the cache)"
    } else {
        "it was written by a newer qwenmk; upgrade qwenmk, or re-run `qwenmk pack` with this one"
    }
}

/// One decoder layer's weights, as BF16 slices (row-major `[out, in]` matrices).
pub type LayerWeights<'a> = LayerTensors<&'a [bf16]>;

/// A verified, memory-mapped packed model.
pub struct PackedModel {
    path: PathBuf,
    mmap: Mmap,
    config: ModelConfig,
    table: Vec<TensorEntry>,
    payload_offset: usize,
    payload_len: usize,
    payload_checksum: u64,
    /// Attached files: name and byte range in the mapping.
    attachments: Vec<(String, std::ops::Range<usize>)>,
}

/// A packed file's header, read without touching the payload: what `qwenmk ls` shows.
#[derive(Debug, Clone)]
pub struct PackedHeader {
    pub config: ModelConfig,
    /// Attached files, in storage order.
    pub attachments: Vec<crate::format::Attachment>,
    /// The length the header says the file has; a file of another length is damaged.
    pub expected_len: u64,
}

impl PackedHeader {
    /// The attached file `name`'s bytes.
    pub fn attachment(&self, name: &str) -> Option<&[u8]> {
        self.attachments
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.bytes.as_slice())
    }
}

/// Reads and checks the header of the packed file at `path` (magic, version, header checksum and
/// the config it carries) without reading the payload: milliseconds instead of a pass over the
/// weights. [`PackedModel::open`] still checks everything before a file is used.
pub fn read_header(path: &Path) -> Result<PackedHeader, PackedError> {
    use std::io::Read;
    let read_err = |source| PackedError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let mut fixed = Vec::with_capacity(format::FIXED_LEN);
    (&mut file)
        .take(format::FIXED_LEN as u64)
        .read_to_end(&mut fixed)
        .map_err(read_err)?;
    let fault = |fault| header_error(fault, path, fixed.len() as u64);
    let (_, header_len) = format::preamble(&fixed).map_err(fault)?;
    // The header length is a u32, so this reads at most 4 GiB, and only what the file has.
    let mut header = fixed.clone();
    (&mut file)
        .take(header_len.saturating_sub(fixed.len() as u64))
        .read_to_end(&mut header)
        .map_err(read_err)?;
    let decoded =
        format::decode(&header).map_err(|f| header_error(f, path, header.len() as u64))?;
    let config =
        ModelConfig::from_json_str(&decoded.config_json).map_err(|source| PackedError::Config {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(PackedHeader {
        config,
        attachments: decoded
            .attachments
            .iter()
            .map(|(name, range)| crate::format::Attachment {
                name: name.clone(),
                bytes: header[range.clone()].to_vec(),
            })
            .collect(),
        expected_len: decoded.payload_offset.saturating_add(decoded.payload_len),
    })
}

fn header_error(fault: HeaderFault, path: &Path, found: u64) -> PackedError {
    let path = path.to_path_buf();
    match fault {
        HeaderFault::Short { needed } => PackedError::Truncated {
            path,
            expected: needed,
            found,
        },
        HeaderFault::BadMagic => PackedError::NotPacked { path },
        HeaderFault::Version(found) => PackedError::UnknownVersion { path, found },
        HeaderFault::Checksum => PackedError::HeaderChecksum { path },
        HeaderFault::Malformed(reason) => PackedError::Malformed { path, reason },
    }
}

/// What [`verify`] establishes about a packed file's bytes.
struct Verified {
    config: ModelConfig,
    table: Vec<TensorEntry>,
    payload_offset: usize,
    payload_len: usize,
    payload_checksum: u64,
    attachments: Vec<(String, std::ops::Range<usize>)>,
}

impl std::fmt::Debug for PackedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedModel")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("tensors", &self.table.len())
            .field("payload_len", &self.payload_len)
            .finish()
    }
}

impl PackedModel {
    /// Maps `path` and verifies it completely, payload checksum included (one pass over the
    /// file: about a second for Qwen3-0.6B from a cold page cache, far less when warm).
    pub fn open(path: &Path) -> Result<Self, PackedError> {
        let path_buf = path.to_path_buf();
        let file = File::open(path).map_err(|source| PackedError::Read {
            path: path_buf.clone(),
            source,
        })?;
        // Opening a directory succeeds on Unix and only its mmap fails, with an obscure errno.
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            return Err(PackedError::Read {
                path: path_buf,
                source: std::io::Error::other("it is a directory, not a packed weights file"),
            });
        }
        // SAFETY: read-only map. Another process truncating or rewriting the file while it is
        // mapped would fault or change what we read; `qwenmk pack` never rewrites in place
        // (it renames a new file over the old one), so our own tools cannot cause that.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| PackedError::Read {
            path: path_buf.clone(),
            source,
        })?;
        let verified = verify(&mmap, &path_buf)?;
        Ok(PackedModel {
            path: path_buf,
            mmap,
            config: verified.config,
            table: verified.table,
            payload_offset: verified.payload_offset,
            payload_len: verified.payload_len,
            payload_checksum: verified.payload_checksum,
            attachments: verified.attachments,
        })
    }

    /// Checks `bytes` as a whole packed file, exactly as [`PackedModel::open`] checks a file, with
    /// `path` naming it in errors. Used by the fuzz targets; bad bytes are an error, never a
    /// panic nor an allocation of a size the bytes claim.
    pub fn verify_bytes(bytes: &[u8], path: &Path) -> Result<ModelConfig, PackedError> {
        verify(bytes, path).map(|v| v.config)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// All tensor bytes, as one buffer to upload; tensor offsets are relative to its start,
    /// which is 4096-byte aligned in the file (and so in the mapping).
    pub fn payload(&self) -> &[u8] {
        &self.mmap[self.payload_offset..self.payload_offset + self.payload_len]
    }

    /// Where the payload starts in the file.
    pub fn payload_offset_in_file(&self) -> u64 {
        self.payload_offset as u64
    }

    /// The bytes of the attached file `name` (see [`crate::pack::MODEL_FILES`]); `None` when the
    /// file carries none of that name.
    pub fn attachment(&self, name: &str) -> Option<&[u8]> {
        self.attachments
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, range)| &self.mmap[range.clone()])
    }

    /// Names of the attached files, in storage order.
    pub fn attachment_names(&self) -> impl Iterator<Item = &str> {
        self.attachments.iter().map(|(n, _)| n.as_str())
    }

    /// The payload's xxh3-64, as verified on open.
    pub fn payload_checksum(&self) -> u64 {
        self.payload_checksum
    }

    /// The tensor table in storage order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.table
    }

    /// A tensor's entry; `None` for `LmHead` of a tied model or a layer out of range.
    pub fn tensor(&self, id: TensorId) -> Option<&TensorEntry> {
        let index = self.table_index(id)?;
        self.table.get(index)
    }

    /// A tensor's byte offset within [`PackedModel::payload`]; `None` as for
    /// [`PackedModel::tensor`]. For the LM head of any model use [`PackedModel::lm_head_entry`].
    pub fn tensor_offset(&self, id: TensorId) -> Option<u64> {
        self.tensor(id).map(|entry| entry.offset)
    }

    /// A tensor's data; `None` as for [`PackedModel::tensor`].
    pub fn tensor_data(&self, id: TensorId) -> Option<&[bf16]> {
        self.tensor(id).map(|entry| self.slice(entry))
    }

    /// Token embedding, `[vocab, hidden]`.
    pub fn embedding(&self) -> &[bf16] {
        self.slice(&self.table[0])
    }

    /// The entry the LM head reads: the embedding's when tied.
    pub fn lm_head_entry(&self) -> &TensorEntry {
        self.tensor(TensorId::LmHead).unwrap_or(&self.table[0])
    }

    /// LM head, `[vocab, hidden]`: the embedding itself when the model is tied.
    pub fn lm_head(&self) -> &[bf16] {
        self.slice(self.lm_head_entry())
    }

    /// Final RMSNorm weight, `[hidden]`.
    pub fn final_norm(&self) -> &[bf16] {
        self.slice(&self.table[1 + LayerPart::ALL.len() * self.config.num_hidden_layers])
    }

    /// Layer `i`'s weights.
    ///
    /// # Panics
    /// If `i >= num_hidden_layers`, like slice indexing.
    pub fn layer(&self, i: usize) -> LayerWeights<'_> {
        self.assert_layer(i);
        LayerTensors::from_fn(|part| self.slice(&self.table[layer_index(i, part)]))
    }

    /// Payload offsets of layer `i`'s tensors, for kernel pointers.
    ///
    /// # Panics
    /// If `i >= num_hidden_layers`.
    pub fn layer_offsets(&self, i: usize) -> LayerTensors<u64> {
        self.assert_layer(i);
        LayerTensors::from_fn(|part| self.table[layer_index(i, part)].offset)
    }

    fn assert_layer(&self, i: usize) {
        assert!(
            i < self.config.num_hidden_layers,
            "layer {i} requested from a model with {} layers",
            self.config.num_hidden_layers
        );
    }

    fn table_index(&self, id: TensorId) -> Option<usize> {
        let layers = self.config.num_hidden_layers;
        match id {
            TensorId::Embedding => Some(0),
            TensorId::Layer { layer, part } => (layer < layers).then(|| layer_index(layer, part)),
            TensorId::FinalNorm => Some(1 + LayerPart::ALL.len() * layers),
            TensorId::LmHead => {
                (!self.config.tie_word_embeddings).then_some(2 + LayerPart::ALL.len() * layers)
            }
        }
    }

    fn slice(&self, entry: &TensorEntry) -> &[bf16] {
        let bytes = &self.payload()[entry.offset as usize..(entry.offset + entry.len) as usize];
        // `open` checked that the payload is page-aligned and every offset 256-aligned and every
        // length even, so this cast cannot fail.
        bytemuck::cast_slice(bytes)
    }
}

fn layer_index(layer: usize, part: LayerPart) -> usize {
    let within = LayerPart::ALL
        .iter()
        .position(|&p| p == part)
        .unwrap_or_default();
    1 + layer * LayerPart::ALL.len() + within
}

/// Every check of a packed file's bytes: magic, version, header checksum, length, config, tensor
/// table, payload checksum.
fn verify(bytes: &[u8], path: &Path) -> Result<Verified, PackedError> {
    let path_buf = path.to_path_buf();
    let file_len = bytes.len() as u64;
    let header = format::decode(bytes).map_err(|fault| header_error(fault, path, file_len))?;
    let malformed = |reason: String| PackedError::Malformed {
        path: path_buf.clone(),
        reason,
    };

    // 1. Length: the header says where the file ends.
    let expected_len = header
        .payload_offset
        .checked_add(header.payload_len)
        .ok_or_else(|| malformed("its payload extent overflows".to_owned()))?;
    if file_len < expected_len {
        return Err(PackedError::Truncated {
            path: path_buf,
            expected: expected_len,
            found: file_len,
        });
    }
    if file_len > expected_len {
        return Err(PackedError::Oversized {
            path: path_buf,
            expected: expected_len,
            found: file_len,
        });
    }
    if header.payload_offset % PAYLOAD_ALIGN != 0 || header.payload_offset < header.header_len {
        return Err(malformed(format!(
            "its payload offset {} is not a multiple of {PAYLOAD_ALIGN} past the header",
            header.payload_offset
        )));
    }

    // 2. The config it carries, and the binary copy of its numbers the kernel reads.
    let config =
        ModelConfig::from_json_str(&header.config_json).map_err(|source| PackedError::Config {
            path: path_buf.clone(),
            source,
        })?;
    for ((name, stored), planned) in format::DIM_NAMES
        .iter()
        .zip(header.dims)
        .zip(format::dims(&config))
    {
        if stored != planned {
            return Err(malformed(format!(
                "its header says {name} = {stored} but its config says {planned}"
            )));
        }
    }
    let tied = header.flags & format::FLAG_TIED != 0;
    if header.rope_theta != config.rope_theta
        || header.rms_norm_eps != config.rms_norm_eps
        || tied != config.tie_word_embeddings
    {
        return Err(malformed(
            "its header's rope_theta, rms_norm_eps or tied flag disagree with its config"
                .to_owned(),
        ));
    }

    // 3. The tensor table must be exactly what the config implies (counted before it is
    //    planned: the stored table's length is bounded by the file, the config's layer count
    //    is not).
    if header.table.len() as u64 != layout::tensor_count(&config) {
        return Err(malformed(format!(
            "it lists {} tensors but its config implies {}",
            header.table.len(),
            layout::tensor_count(&config)
        )));
    }
    let table = layout::plan(&config);
    if let Some((stored, planned)) = header
        .table
        .iter()
        .zip(&table)
        .find(|(stored, planned)| !stored.matches(planned))
    {
        return Err(malformed(format!(
            "its tensor table entry `{}` (shape {:?}, offset {}, {} bytes) does not match the \
             config, which implies `{}` (shape {:?}, offset {}, {} bytes)",
            stored.name,
            stored.shape,
            stored.offset,
            stored.len,
            planned.id,
            planned.shape,
            planned.offset,
            planned.len
        )));
    }
    if header.payload_len != layout::payload_len(&table) {
        return Err(malformed(format!(
            "its payload is {} bytes but its tensors need {}",
            header.payload_len,
            layout::payload_len(&table)
        )));
    }

    // 4. The payload checksum, last: the most expensive check.
    let payload_offset = header.payload_offset as usize;
    let payload_len = header.payload_len as usize;
    let payload = &bytes[payload_offset..payload_offset + payload_len];
    let found = xxhash_rust::xxh3::xxh3_64(payload);
    if found != header.payload_checksum {
        return Err(PackedError::PayloadChecksum {
            path: path_buf,
            expected: header.payload_checksum,
            found,
        });
    }

    Ok(Verified {
        config,
        table,
        payload_offset,
        payload_len,
        payload_checksum: found,
        attachments: header.attachments,
    })
}
