//! The packed file's header, byte by byte (see `docs/FORMAT.md`). Everything is little-endian.
//!
//! ```text
//! 0    [u8; 8]  magic "QWENMKPK"
//! 8    u32      format version
//! 12   u32      header length H (bytes 0..H are the header; the checksum covers them)
//! 16   u64      xxh3-64 of bytes 0..H with this field read as zero
//! 24   u64      payload offset (a multiple of 4096)
//! 32   u64      payload length
//! 40   u64      xxh3-64 of the payload
//! 48   u32 × 8  vocab, hidden, intermediate, layers, heads, kv heads, head_dim, max positions
//! 80   f64      rope_theta
//! 88   f64      rms_norm_eps
//! 96   u32      flags (bit 0: tied embedding)
//! 100  u32      tensor count N
//! 104  u32      config JSON length J
//! 108  u32      attached file count F
//! 112  N × 96   tensor table
//! 112 + 96N     J bytes of config.json (UTF-8)
//! then F × 64   attached file table (name, offset, length)
//! then          the attached files' bytes, one after another; then zeros up to the payload
//! ```

use crate::config::ModelConfig;
use crate::layout::{PackedDtype, TensorEntry};

pub const MAGIC: [u8; 8] = *b"QWENMKPK";
/// The layout version this build writes and the only one it reads. Any change to the header,
/// the table, the tensor order, shapes or alignment bumps it. Version 2 added the attached files
/// (tokenizer, chat template, generation config, provenance).
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const FIXED_LEN: usize = 112;
pub(crate) const ENTRY_LEN: usize = 96;
/// Bytes of a table entry's zero-padded name.
pub(crate) const NAME_LEN: usize = 56;
pub(crate) const ATTACHMENT_ENTRY_LEN: usize = 64;
/// Bytes of an attached file's zero-padded name.
pub const ATTACHMENT_NAME_LEN: usize = 48;
const CHECKSUM_FIELD: std::ops::Range<usize> = 16..24;
pub(crate) const FLAG_TIED: u32 = 1;

/// The eight dimensions stored in binary, in header order.
pub(crate) fn dims(c: &ModelConfig) -> [u64; 8] {
    [
        c.vocab_size,
        c.hidden_size,
        c.intermediate_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.head_dim,
        c.max_position_embeddings,
    ]
    .map(|d| d as u64)
}

pub(crate) const DIM_NAMES: [&str; 8] = [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "max_position_embeddings",
];

/// A decoded header, before it is checked against the config it carries.
#[derive(Debug)]
pub(crate) struct Header {
    pub header_len: u64,
    pub payload_offset: u64,
    pub payload_len: u64,
    pub payload_checksum: u64,
    pub dims: [u64; 8],
    pub rope_theta: f64,
    pub rms_norm_eps: f64,
    pub flags: u32,
    pub table: Vec<RawEntry>,
    pub config_json: String,
    /// Attached files: name and byte range in the file (inside the header).
    pub attachments: Vec<(String, std::ops::Range<usize>)>,
}

/// A tensor table entry as stored.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub name: String,
    pub dtype: u16,
    pub shape: Vec<u64>,
    pub offset: u64,
    pub len: u64,
}

/// A file carried in the header: the tokenizer, the chat template, the generation config, where
/// the weights came from. The loader hands the bytes back by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// At most [`ATTACHMENT_NAME_LEN`] bytes of UTF-8, no NUL; unique within a file.
    pub name: String,
    pub bytes: Vec<u8>,
}

/// Why a set of attachments cannot be stored.
pub(crate) fn check_attachments(attachments: &[Attachment]) -> Result<(), String> {
    for (i, a) in attachments.iter().enumerate() {
        if a.name.is_empty() || a.name.len() > ATTACHMENT_NAME_LEN || a.name.contains('\0') {
            return Err(format!(
                "the attached file name {:?} is empty, longer than {ATTACHMENT_NAME_LEN} bytes or \
                 contains NUL",
                a.name
            ));
        }
        if attachments[..i].iter().any(|b| b.name == a.name) {
            return Err(format!("the file {:?} is attached twice", a.name));
        }
    }
    Ok(())
}

/// Encodes the header; the payload offset and checksum are given by the writer. `attachments`
/// must have passed [`check_attachments`], and the header must fit `u32` (the writer checks
/// [`header_len`] first).
pub(crate) fn encode(
    config: &ModelConfig,
    table: &[TensorEntry],
    attachments: &[Attachment],
    payload_offset: u64,
    payload_len: u64,
    payload_checksum: u64,
) -> Vec<u8> {
    let json = config.to_json_string();
    let header_len = header_len(table.len(), json.len(), attachments);
    let mut b = Vec::with_capacity(header_len);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(header_len as u32).to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes()); // header checksum, filled in below
    b.extend_from_slice(&payload_offset.to_le_bytes());
    b.extend_from_slice(&payload_len.to_le_bytes());
    b.extend_from_slice(&payload_checksum.to_le_bytes());
    for d in dims(config) {
        // Dimensions were checked to fit u32 when the config was validated.
        b.extend_from_slice(&(d as u32).to_le_bytes());
    }
    b.extend_from_slice(&config.rope_theta.to_le_bytes());
    b.extend_from_slice(&config.rms_norm_eps.to_le_bytes());
    let flags = if config.tie_word_embeddings {
        FLAG_TIED
    } else {
        0
    };
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&(table.len() as u32).to_le_bytes());
    b.extend_from_slice(&(json.len() as u32).to_le_bytes());
    b.extend_from_slice(&(attachments.len() as u32).to_le_bytes());
    debug_assert_eq!(b.len(), FIXED_LEN);
    for entry in table {
        let mut name = [0u8; NAME_LEN];
        let id = entry.id.to_string();
        // The longest name, `layers.4294967295.input_norm`, is 28 bytes.
        name[..id.len()].copy_from_slice(id.as_bytes());
        b.extend_from_slice(&name);
        b.extend_from_slice(&entry.dtype.code().to_le_bytes());
        b.extend_from_slice(&(entry.shape.len() as u16).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for axis in 0..2 {
            let d = entry.shape.get(axis).map_or(0, |&d| d as u64);
            b.extend_from_slice(&d.to_le_bytes());
        }
        b.extend_from_slice(&entry.offset.to_le_bytes());
        b.extend_from_slice(&entry.len.to_le_bytes());
    }
    b.extend_from_slice(json.as_bytes());
    let mut offset = (b.len() + ATTACHMENT_ENTRY_LEN * attachments.len()) as u64;
    for attachment in attachments {
        let mut name = [0u8; ATTACHMENT_NAME_LEN];
        name[..attachment.name.len()].copy_from_slice(attachment.name.as_bytes());
        b.extend_from_slice(&name);
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&(attachment.bytes.len() as u64).to_le_bytes());
        offset += attachment.bytes.len() as u64;
    }
    for attachment in attachments {
        b.extend_from_slice(&attachment.bytes);
    }
    debug_assert_eq!(b.len(), header_len);
    let checksum = header_checksum(&b);
    b[CHECKSUM_FIELD].copy_from_slice(&checksum.to_le_bytes());
    b
}

/// Bytes of a header with `tensors` table entries, `json_len` bytes of config and these files.
pub(crate) fn header_len(tensors: usize, json_len: usize, attachments: &[Attachment]) -> usize {
    FIXED_LEN
        + ENTRY_LEN * tensors
        + json_len
        + attachments
            .iter()
            .map(|a| ATTACHMENT_ENTRY_LEN + a.bytes.len())
            .sum::<usize>()
}

/// xxh3-64 of `header` with the checksum field read as zero, without copying the header (it holds
/// the tokenizer: megabytes).
fn header_checksum(header: &[u8]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&header[..CHECKSUM_FIELD.start]);
    h.update(&[0u8; 8]);
    h.update(&header[CHECKSUM_FIELD.end..]);
    h.digest()
}

/// What can be wrong with header bytes, before any file context is attached.
#[derive(Debug, PartialEq)]
pub(crate) enum HeaderFault {
    /// Fewer bytes than the header needs: `needed` in all.
    Short {
        needed: u64,
    },
    BadMagic,
    Version(u32),
    Checksum,
    Malformed(String),
}

/// Reads the fixed fields: magic, version and header length. Checked first so that a file of
/// another kind or version gets the matching sentence rather than a checksum error.
pub(crate) fn preamble(bytes: &[u8]) -> Result<(u32, u64), HeaderFault> {
    if bytes.len() < 8 || bytes[..8] != MAGIC {
        return Err(if bytes.len() < 8 && MAGIC.starts_with(bytes) {
            HeaderFault::Short {
                needed: FIXED_LEN as u64,
            }
        } else {
            HeaderFault::BadMagic
        });
    }
    let mut r = Reader { bytes, at: 8 };
    let version = r.u32()?;
    if version != FORMAT_VERSION {
        return Err(HeaderFault::Version(version));
    }
    let header_len = u64::from(r.u32()?);
    Ok((version, header_len))
}

/// Decodes and checksums the header at the start of `bytes`. Every count and length it reads is
/// checked against the bytes actually there before anything is allocated for it.
pub(crate) fn decode(bytes: &[u8]) -> Result<Header, HeaderFault> {
    let (_version, header_len) = preamble(bytes)?;
    if header_len < FIXED_LEN as u64 {
        return Err(HeaderFault::Malformed(format!(
            "its header length {header_len} is below the minimum {FIXED_LEN}"
        )));
    }
    let Some(header) = bytes.get(..header_len as usize) else {
        return Err(HeaderFault::Short { needed: header_len });
    };
    let stored = u64::from_le_bytes(header[CHECKSUM_FIELD].try_into().unwrap_or_default());
    if header_checksum(header) != stored {
        return Err(HeaderFault::Checksum);
    }

    let mut r = Reader {
        bytes: header,
        at: 24,
    };
    let payload_offset = r.u64()?;
    let payload_len = r.u64()?;
    let payload_checksum = r.u64()?;
    let mut dims = [0u64; 8];
    for d in &mut dims {
        *d = u64::from(r.u32()?);
    }
    let rope_theta = r.f64()?;
    let rms_norm_eps = r.f64()?;
    let flags = r.u32()?;
    let count = r.u32()? as usize;
    let json_len = r.u32()? as usize;
    let attachment_count = r.u32()? as usize;
    // The fixed-size parts must fit the header before the table is allocated.
    let fixed_parts = count
        .checked_mul(ENTRY_LEN)
        .and_then(|t| t.checked_add(FIXED_LEN + json_len))
        .and_then(|t| t.checked_add(attachment_count.checked_mul(ATTACHMENT_ENTRY_LEN)?));
    if fixed_parts.is_none_or(|needed| needed > header.len()) {
        return Err(HeaderFault::Malformed(format!(
            "its header length {header_len} cannot hold {count} tensors, {json_len} bytes of \
             config and {attachment_count} attached files"
        )));
    }
    let mut table = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.name(NAME_LEN, "a tensor name")?;
        let dtype = r.u16()?;
        let rank = r.u16()? as usize;
        let _reserved = r.u32()?;
        let dims2 = [r.u64()?, r.u64()?];
        if rank == 0 || rank > 2 {
            return Err(HeaderFault::Malformed(format!(
                "tensor `{name}` has rank {rank}; only 1 and 2 exist"
            )));
        }
        table.push(RawEntry {
            name,
            dtype,
            shape: dims2[..rank].to_vec(),
            offset: r.u64()?,
            len: r.u64()?,
        });
    }
    let config_json = std::str::from_utf8(r.take(json_len)?)
        .map_err(|_| HeaderFault::Malformed("the stored config is not UTF-8".to_owned()))?
        .to_owned();

    // Attached files: contiguous, in table order, ending exactly at the header's end.
    let mut attachments: Vec<(String, std::ops::Range<usize>)> =
        Vec::with_capacity(attachment_count);
    let mut cursor = (r.at + attachment_count * ATTACHMENT_ENTRY_LEN) as u64;
    for _ in 0..attachment_count {
        let name = r.name(ATTACHMENT_NAME_LEN, "an attached file name")?;
        let offset = r.u64()?;
        let len = r.u64()?;
        if name.is_empty() || attachments.iter().any(|(n, _)| *n == name) {
            return Err(HeaderFault::Malformed(format!(
                "its attached file name {name:?} is empty or repeated"
            )));
        }
        let end = offset.checked_add(len).filter(|&end| end <= header_len);
        let Some(end) = end.filter(|_| offset == cursor) else {
            return Err(HeaderFault::Malformed(format!(
                "its attached file {name:?} ({len} bytes at {offset}) is not where the header \
                 places it"
            )));
        };
        attachments.push((name, offset as usize..end as usize));
        cursor = end;
    }
    if cursor != header_len {
        return Err(HeaderFault::Malformed(format!(
            "its header length {header_len} does not match its contents ({cursor} bytes)"
        )));
    }
    Ok(Header {
        header_len,
        payload_offset,
        payload_len,
        payload_checksum,
        dims,
        rope_theta,
        rms_norm_eps,
        flags,
        table,
        config_json,
        attachments,
    })
}

impl RawEntry {
    /// Whether this stored entry is exactly the planned `expected` one.
    pub(crate) fn matches(&self, expected: &TensorEntry) -> bool {
        self.name == expected.id.to_string()
            && PackedDtype::from_code(self.dtype) == Some(expected.dtype)
            && self
                .shape
                .iter()
                .map(|&d| d as usize)
                .eq(expected.shape.iter().copied())
            && self.offset == expected.offset
            && self.len == expected.len
    }
}

/// A bounds-checked little-endian cursor: running off the end is a fault, never a panic.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HeaderFault> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(HeaderFault::Short {
                needed: (self.at as u64).saturating_add(n as u64),
            });
        };
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// A zero-padded UTF-8 name of `len` bytes.
    fn name(&mut self, len: usize, what: &str) -> Result<String, HeaderFault> {
        let bytes = self.take(len)?;
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
        std::str::from_utf8(&bytes[..end])
            .map(str::to_owned)
            .map_err(|_| HeaderFault::Malformed(format!("{what} is not UTF-8")))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], HeaderFault> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, HeaderFault> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, HeaderFault> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, HeaderFault> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, HeaderFault> {
        Ok(f64::from_le_bytes(self.array()?))
    }
}
