//! Commit-log record format: [`encode`] / [`seal`] write it, [`decode`] reads it back and never
//! panics on any input.
//!
//! All integers are little-endian. A segment holds message records back to back and is closed
//! by one filler record that runs to the segment's last byte, so no record spans two segments.
//!
//! ## Message record
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | `total_size`: bytes of the whole record, this field included |
//! | 4  | 4 | `magic` = [`MESSAGE_MAGIC`] |
//! | 8  | 4 | `crc` (see below) |
//! | 12 | 4 | queue id |
//! | 16 | 8 | queue offset |
//! | 24 | 8 | physical offset (position of byte 0 in the log) |
//! | 32 | 4 | flags |
//! | 36 | 4 | reconsume times |
//! | 40 | 8 | born timestamp, ms (i64) |
//! | 48 | 8 | store timestamp, ms (i64) |
//! | 56 | 8 | prepared transaction offset (i64) |
//! | 64 | … | variable part, ending exactly at `total_size` |
//!
//! Variable part, in order: topic, born host, store host, message id (each `u16` length +
//! UTF-8 bytes); tag (`u16` length + bytes, length [`NO_TAG`] = no tag and no bytes); keys
//! (`u16` count, then per key `u16` length + bytes); properties (`u32` count, then per
//! property `u16` name length + name, `u32` value length + value); body (`u32` length + bytes).
//!
//! `crc` is CRC32C over the variable part `[64, total_size)`, continued over `[12, 64)` and then
//! over `[0, 8)`: every byte but the crc itself. The order is deliberate: the variable part (the
//! bulk) is known before the append lock, so [`Prepared::new`] computes its CRC outside it
//! (streaming over the message's fields, no buffer); queue offset, physical offset and store
//! timestamp are assigned under the lock, where [`Prepared::write`] continues the CRC over only
//! those 60 header bytes while it writes the record straight into the mapped segment.
//!
//! ## Filler record
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 4 | `total_size`: bytes to the end of the segment (≥ [`FILLER_LEN`]) |
//! | 4  | 4 | `magic` = [`FILLER_MAGIC`] |
//! | 8  | 4 | CRC32C over `[12, 24)` continued over `[0, 8)` |
//! | 12 | 4 | reserved, 0 |
//! | 16 | 8 | physical offset of the filler |
//!
//! Bytes after the 24-byte filler header up to the segment end are not covered and not read.

use crate::message::{AppendMessage, StoredMessage};
use crate::StoreError;
use rocketlog_common::{PhysicalOffset, QueueOffset};
use thiserror::Error;

/// Magic of a message record.
pub const MESSAGE_MAGIC: u32 = 0x524C_4D31;
/// Magic of the filler that closes a segment.
pub const FILLER_MAGIC: u32 = 0x524C_4631;
/// Bytes of the fixed message header.
pub const HEADER_LEN: usize = 64;
/// Bytes of the filler header; every segment keeps at least this much room for it.
pub const FILLER_LEN: usize = 24;
/// Tag length meaning "no tag".
pub const NO_TAG: u16 = u16::MAX;

const OFF_SIZE: usize = 0;
const OFF_MAGIC: usize = 4;
const OFF_CRC: usize = 8;
const OFF_QUEUE_ID: usize = 12;
const OFF_QUEUE_OFFSET: usize = 16;
const OFF_PHYSICAL: usize = 24;
const OFF_FLAGS: usize = 32;
const OFF_RECONSUME: usize = 36;
const OFF_BORN_TS: usize = 40;
const OFF_STORE_TS: usize = 48;
const OFF_PREPARED: usize = 56;
const FILLER_OFF_PHYSICAL: usize = 16;
/// Smallest possible variable part: five u16 lengths, u16 key count, u32 property count,
/// u32 body length.
const MIN_VAR_LEN: usize = 5 * 2 + 2 + 4 + 4;

/// Why bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("record truncated: {need} bytes needed, {have} available")]
    Truncated { need: usize, have: usize },
    #[error("bad magic {found:#010x}")]
    BadMagic { found: u32 },
    #[error("impossible record length {len}")]
    BadLength { len: u32 },
    #[error("crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("field {field} overruns the record")]
    Overrun { field: &'static str },
    #[error("field {field} is not valid UTF-8")]
    BadUtf8 { field: &'static str },
    #[error("{extra} unexpected bytes after the body")]
    TrailingBytes { extra: usize },
}

/// A decoded record, borrowing from the bytes it was decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record<'a> {
    /// A message.
    Message(RecordView<'a>),
    /// The end of a segment; the next record starts at the next segment.
    Filler {
        /// Bytes from the filler to the segment end.
        size: u32,
        /// Position of the filler in the log.
        physical_offset: u64,
    },
}

/// Borrowed view of a message record; every field already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Bytes of the whole record.
    pub size: u32,
    /// Queue id within the topic.
    pub queue_id: u32,
    /// Dense offset within (topic, queue id).
    pub queue_offset: u64,
    /// Position of the record in the log (checked against the actual position by recovery).
    pub physical_offset: u64,
    /// Opaque broker flags.
    pub flags: u32,
    /// Delivery attempts so far.
    pub reconsume_times: u32,
    /// Producer timestamp, ms.
    pub born_timestamp_ms: i64,
    /// Store timestamp, ms; never decreases along the log.
    pub store_timestamp_ms: i64,
    /// Transaction half-message offset, 0 when unused.
    pub prepared_transaction_offset: i64,
    /// Topic name.
    pub topic: &'a str,
    /// Producer address.
    pub born_host: &'a str,
    /// Storing broker address.
    pub store_host: &'a str,
    /// Message id.
    pub message_id: &'a str,
    /// Tag; `None` differs from `Some("")`.
    pub tag: Option<&'a str>,
    key_count: u16,
    keys_raw: &'a [u8],
    property_count: u32,
    properties_raw: &'a [u8],
    /// Payload.
    pub body: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The message keys, in append order.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        let mut c = Cursor::new(self.keys_raw);
        (0..self.key_count).map_while(move |_| c.str16("key").ok())
    }

    /// The properties, in append order.
    pub fn properties(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let mut c = Cursor::new(self.properties_raw);
        (0..self.property_count).map_while(move |_| {
            let k = c.str16("property name").ok()?;
            let v = c.str32("property value").ok()?;
            Some((k, v))
        })
    }
}

/// Encoded size of `properties` as stored: count + per entry lengths and bytes.
pub fn properties_len(properties: &[(String, String)]) -> usize {
    4 + properties
        .iter()
        .map(|(k, v)| 2 + k.len() + 4 + v.len())
        .sum::<usize>()
}

fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        return Err(StoreError::FieldTooLong { field, len, max });
    }
    Ok(())
}

/// Total encoded size of `msg`, after checking every length fits its field.
pub fn encoded_len(msg: &AppendMessage) -> Result<usize, StoreError> {
    let u16max = usize::from(u16::MAX);
    check_len("topic", msg.topic.len(), u16max)?;
    check_len("born_host", msg.born_host.len(), u16max)?;
    check_len("store_host", msg.store_host.len(), u16max)?;
    check_len("message_id", msg.message_id.len(), u16max)?;
    let tag_len = msg.tag.as_ref().map_or(0, String::len);
    check_len("tag", tag_len, usize::from(NO_TAG) - 1)?;
    check_len("keys (count)", msg.keys.len(), u16max)?;
    let mut keys_len = 0;
    for k in &msg.keys {
        check_len("key", k.len(), u16max)?;
        keys_len += 2 + k.len();
    }
    for (k, v) in &msg.properties {
        check_len("property name", k.len(), u16max)?;
        check_len("property value", v.len(), u32::MAX as usize)?;
    }
    let total = HEADER_LEN
        + 2
        + msg.topic.len()
        + 2
        + msg.born_host.len()
        + 2
        + msg.store_host.len()
        + 2
        + msg.message_id.len()
        + 2
        + tag_len
        + 2
        + keys_len
        + properties_len(&msg.properties)
        + 4
        + msg.body.len();
    check_len("record", total, u32::MAX as usize)?;
    Ok(total)
}

/// Where the bytes of the variable part go: a CRC or a buffer (one field list for both, so
/// they cannot disagree).
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

/// CRC32C of a byte stream; tiny pieces are staged so the CRC runs over larger chunks.
struct CrcSink {
    crc: u32,
    stage: [u8; 64],
    staged: usize,
}

impl CrcSink {
    fn new() -> Self {
        CrcSink {
            crc: 0,
            stage: [0; 64],
            staged: 0,
        }
    }

    fn drain(&mut self) {
        self.crc = crc32c::crc32c_append(self.crc, &self.stage[..self.staged]);
        self.staged = 0;
    }

    fn finish(mut self) -> u32 {
        self.drain();
        self.crc
    }
}

impl Sink for CrcSink {
    fn put(&mut self, bytes: &[u8]) {
        if self.staged + bytes.len() > self.stage.len() {
            self.drain();
        }
        if bytes.len() >= self.stage.len() {
            self.crc = crc32c::crc32c_append(self.crc, bytes);
        } else {
            self.stage[self.staged..self.staged + bytes.len()].copy_from_slice(bytes);
            self.staged += bytes.len();
        }
    }
}

/// Writes into a slice whose length was computed by [`encoded_len`].
struct SliceSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Sink for SliceSink<'_> {
    fn put(&mut self, bytes: &[u8]) {
        // Lengths were measured by encoded_len; `get_mut` keeps a mismatch from panicking.
        if let Some(dst) = self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
        self.pos += bytes.len();
    }
}

fn put_str16(out: &mut impl Sink, s: &str) {
    out.put(&(s.len() as u16).to_le_bytes());
    out.put(s.as_bytes());
}

/// Emits the variable part. Lengths were checked by [`encoded_len`], so the casts are exact.
fn emit_var(msg: &AppendMessage, out: &mut impl Sink) {
    put_str16(out, &msg.topic);
    put_str16(out, &msg.born_host);
    put_str16(out, &msg.store_host);
    put_str16(out, &msg.message_id);
    match &msg.tag {
        Some(t) => put_str16(out, t),
        None => out.put(&NO_TAG.to_le_bytes()),
    }
    out.put(&(msg.keys.len() as u16).to_le_bytes());
    for k in &msg.keys {
        put_str16(out, k);
    }
    out.put(&(msg.properties.len() as u32).to_le_bytes());
    for (k, v) in &msg.properties {
        put_str16(out, k);
        out.put(&(v.len() as u32).to_le_bytes());
        out.put(v.as_bytes());
    }
    out.put(&(msg.body.len() as u32).to_le_bytes());
    out.put(&msg.body);
}

/// A message checked, measured, and with the CRC of its variable part computed: everything an
/// append can do before taking the lock. [`Prepared::write`] then writes the record straight
/// into its destination (the mapped segment) with the fields assigned under the lock.
#[derive(Debug)]
pub struct Prepared<'m> {
    msg: &'m AppendMessage,
    len: usize,
    var_crc: u32,
}

impl<'m> Prepared<'m> {
    /// Checks every field length and computes the size and the variable part's CRC.
    pub fn new(msg: &'m AppendMessage) -> Result<Self, StoreError> {
        let len = encoded_len(msg)?;
        let mut crc = CrcSink::new();
        emit_var(msg, &mut crc);
        Ok(Prepared {
            msg,
            len,
            var_crc: crc.finish(),
        })
    }

    /// Size of the whole record.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a record has at least its header.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the complete record into `dst` (exactly [`Prepared::len`] bytes) and finishes
    /// its CRC over the 60 header bytes.
    pub fn write(
        &self,
        dst: &mut [u8],
        queue_offset: u64,
        physical_offset: u64,
        store_timestamp_ms: i64,
    ) {
        let msg = self.msg;
        let mut h = [0u8; HEADER_LEN];
        h[OFF_SIZE..4].copy_from_slice(&(self.len as u32).to_le_bytes());
        h[OFF_MAGIC..8].copy_from_slice(&MESSAGE_MAGIC.to_le_bytes());
        h[OFF_QUEUE_ID..16].copy_from_slice(&msg.queue_id.to_le_bytes());
        h[OFF_QUEUE_OFFSET..24].copy_from_slice(&queue_offset.to_le_bytes());
        h[OFF_PHYSICAL..32].copy_from_slice(&physical_offset.to_le_bytes());
        h[OFF_FLAGS..36].copy_from_slice(&msg.flags.to_le_bytes());
        h[OFF_RECONSUME..40].copy_from_slice(&msg.reconsume_times.to_le_bytes());
        h[OFF_BORN_TS..48].copy_from_slice(&msg.born_timestamp_ms.to_le_bytes());
        h[OFF_STORE_TS..56].copy_from_slice(&store_timestamp_ms.to_le_bytes());
        h[OFF_PREPARED..64].copy_from_slice(&msg.prepared_transaction_offset.to_le_bytes());
        let crc = crc32c::crc32c_append(self.var_crc, &h[OFF_QUEUE_ID..HEADER_LEN]);
        let crc = crc32c::crc32c_append(crc, &h[..OFF_CRC]);
        h[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        let mut out = SliceSink { buf: dst, pos: 0 };
        out.put(&h);
        emit_var(msg, &mut out);
        debug_assert_eq!(out.pos, self.len);
    }
}

/// Writes `msg` into `buf` (resized to fit) with queue offset, physical offset and store
/// timestamp still zero, and returns the CRC32C of the variable part for [`seal`].
pub fn encode(msg: &AppendMessage, buf: &mut Vec<u8>) -> Result<u32, StoreError> {
    let p = Prepared::new(msg)?;
    buf.clear();
    buf.resize(p.len(), 0);
    p.write(buf, 0, 0, 0);
    Ok(p.var_crc)
}

/// Fills in the fields known only under the append lock and the final CRC. `record` must be
/// the output of [`encode`] and `var_crc` its return value. Costs a CRC over 60 bytes.
pub fn seal(
    record: &mut [u8],
    var_crc: u32,
    queue_offset: u64,
    physical_offset: u64,
    store_timestamp_ms: i64,
) {
    record[OFF_QUEUE_OFFSET..OFF_QUEUE_OFFSET + 8].copy_from_slice(&queue_offset.to_le_bytes());
    record[OFF_PHYSICAL..OFF_PHYSICAL + 8].copy_from_slice(&physical_offset.to_le_bytes());
    record[OFF_STORE_TS..OFF_STORE_TS + 8].copy_from_slice(&store_timestamp_ms.to_le_bytes());
    let crc = crc32c::crc32c_append(var_crc, &record[OFF_QUEUE_ID..HEADER_LEN]);
    let crc = crc32c::crc32c_append(crc, &record[..OFF_CRC]);
    record[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
}

/// The filler closing a segment: `size` bytes from `physical_offset` to the segment end.
pub fn encode_filler(size: u32, physical_offset: u64) -> [u8; FILLER_LEN] {
    let mut f = [0u8; FILLER_LEN];
    f[OFF_SIZE..4].copy_from_slice(&size.to_le_bytes());
    f[OFF_MAGIC..8].copy_from_slice(&FILLER_MAGIC.to_le_bytes());
    f[FILLER_OFF_PHYSICAL..].copy_from_slice(&physical_offset.to_le_bytes());
    let crc = filler_crc(&f);
    f[OFF_CRC..12].copy_from_slice(&crc.to_le_bytes());
    f
}

fn filler_crc(f: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&f[12..FILLER_LEN]), &f[..OFF_CRC])
}

/// Decodes and fully validates the record at the start of `bytes` (which may continue past
/// it). For fillers, `bytes` need only hold the 24-byte header. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    decode_inner(bytes, true)
}

/// [`decode`] without the CRC check, for records this process wrote or recovery validated.
pub(crate) fn decode_trusted(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    decode_inner(bytes, false)
}

/// Size and magic of the record at the start of `bytes`, without looking further.
pub fn peek(bytes: &[u8]) -> Result<(u32, u32), DecodeError> {
    let mut c = Cursor::new(bytes);
    Ok((c.u32("total_size")?, c.u32("magic")?))
}

/// The store timestamp of the message record at the start of `bytes` (header only, no CRC).
pub fn peek_store_timestamp(bytes: &[u8]) -> Result<i64, DecodeError> {
    let (_, magic) = peek(bytes)?;
    if magic != MESSAGE_MAGIC {
        return Err(DecodeError::BadMagic { found: magic });
    }
    Ok(le_u64(bytes, OFF_STORE_TS, "store_timestamp")? as i64)
}

fn decode_inner(bytes: &[u8], verify: bool) -> Result<Record<'_>, DecodeError> {
    let (size, magic) = peek(bytes)?;
    match magic {
        FILLER_MAGIC => decode_filler(bytes, size, verify),
        MESSAGE_MAGIC => decode_message(bytes, size, verify).map(Record::Message),
        found => Err(DecodeError::BadMagic { found }),
    }
}

fn decode_filler(bytes: &[u8], size: u32, verify: bool) -> Result<Record<'_>, DecodeError> {
    if (size as usize) < FILLER_LEN {
        return Err(DecodeError::BadLength { len: size });
    }
    let head = bytes.get(..FILLER_LEN).ok_or(DecodeError::Truncated {
        need: FILLER_LEN,
        have: bytes.len(),
    })?;
    if verify {
        let stored = le_u32(head, OFF_CRC, "crc")?;
        let computed = filler_crc(head);
        if stored != computed {
            return Err(DecodeError::BadCrc { stored, computed });
        }
    }
    Ok(Record::Filler {
        size,
        physical_offset: le_u64(head, FILLER_OFF_PHYSICAL, "physical_offset")?,
    })
}

fn decode_message(bytes: &[u8], size: u32, verify: bool) -> Result<RecordView<'_>, DecodeError> {
    let total = size as usize;
    if total < HEADER_LEN + MIN_VAR_LEN {
        return Err(DecodeError::BadLength { len: size });
    }
    let rec = bytes.get(..total).ok_or(DecodeError::Truncated {
        need: total,
        have: bytes.len(),
    })?;
    if verify {
        let stored = le_u32(rec, OFF_CRC, "crc")?;
        let crc = crc32c::crc32c(&rec[HEADER_LEN..]);
        let crc = crc32c::crc32c_append(crc, &rec[OFF_QUEUE_ID..HEADER_LEN]);
        let computed = crc32c::crc32c_append(crc, &rec[..OFF_CRC]);
        if stored != computed {
            return Err(DecodeError::BadCrc { stored, computed });
        }
    }
    let mut c = Cursor::new(&rec[HEADER_LEN..]);
    let topic = c.str16("topic")?;
    let born_host = c.str16("born_host")?;
    let store_host = c.str16("store_host")?;
    let message_id = c.str16("message_id")?;
    let tag_len = c.u16("tag")?;
    let tag = if tag_len == NO_TAG {
        None
    } else {
        Some(c.str_n(usize::from(tag_len), "tag")?)
    };
    let key_count = c.u16("key count")?;
    let keys_start = c.pos;
    for _ in 0..key_count {
        c.str16("key")?;
    }
    let keys_raw = &c.buf[keys_start..c.pos];
    let property_count = c.u32("property count")?;
    let props_start = c.pos;
    for _ in 0..property_count {
        c.str16("property name")?;
        c.str32("property value")?;
    }
    let properties_raw = &c.buf[props_start..c.pos];
    let body_len = c.u32("body length")? as usize;
    let body = c.bytes(body_len, "body")?;
    let extra = c.buf.len() - c.pos;
    if extra != 0 {
        return Err(DecodeError::TrailingBytes { extra });
    }
    Ok(RecordView {
        size,
        queue_id: le_u32(rec, OFF_QUEUE_ID, "queue_id")?,
        queue_offset: le_u64(rec, OFF_QUEUE_OFFSET, "queue_offset")?,
        physical_offset: le_u64(rec, OFF_PHYSICAL, "physical_offset")?,
        flags: le_u32(rec, OFF_FLAGS, "flags")?,
        reconsume_times: le_u32(rec, OFF_RECONSUME, "reconsume_times")?,
        born_timestamp_ms: le_u64(rec, OFF_BORN_TS, "born_timestamp")? as i64,
        store_timestamp_ms: le_u64(rec, OFF_STORE_TS, "store_timestamp")? as i64,
        prepared_transaction_offset: le_u64(rec, OFF_PREPARED, "prepared_tx")? as i64,
        topic,
        born_host,
        store_host,
        message_id,
        tag,
        key_count,
        keys_raw,
        property_count,
        properties_raw,
        body,
    })
}

fn le_u32(b: &[u8], at: usize, field: &'static str) -> Result<u32, DecodeError> {
    let mut c = Cursor { buf: b, pos: at };
    c.u32(field)
}

fn le_u64(b: &[u8], at: usize, field: &'static str) -> Result<u64, DecodeError> {
    let mut c = Cursor { buf: b, pos: at };
    let v = c.bytes(8, field)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(v);
    Ok(u64::from_le_bytes(a))
}

/// Bounds-checked reader: every method returns an error instead of panicking.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(DecodeError::Overrun { field })?;
        match self.buf.get(self.pos..end) {
            Some(s) => {
                self.pos = end;
                Ok(s)
            }
            None if self.pos == 0 => Err(DecodeError::Truncated {
                need: n,
                have: self.buf.len(),
            }),
            None => Err(DecodeError::Overrun { field }),
        }
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn str_n(&mut self, n: usize, field: &'static str) -> Result<&'a str, DecodeError> {
        let b = self.bytes(n, field)?;
        std::str::from_utf8(b).map_err(|_| DecodeError::BadUtf8 { field })
    }

    fn str16(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.u16(field)?;
        self.str_n(usize::from(n), field)
    }

    fn str32(&mut self, field: &'static str) -> Result<&'a str, DecodeError> {
        let n = self.u32(field)?;
        self.str_n(n as usize, field)
    }
}

impl RecordView<'_> {
    /// An owned copy of the message this record holds.
    pub(crate) fn to_stored(&self) -> StoredMessage {
        let v = self;
        StoredMessage {
            topic: v.topic.to_owned(),
            queue_id: v.queue_id,
            flags: v.flags,
            tag: v.tag.map(str::to_owned),
            keys: v.keys().map(str::to_owned).collect(),
            message_id: v.message_id.to_owned(),
            born_timestamp_ms: v.born_timestamp_ms,
            born_host: v.born_host.to_owned(),
            store_host: v.store_host.to_owned(),
            reconsume_times: v.reconsume_times,
            prepared_transaction_offset: v.prepared_transaction_offset,
            properties: v
                .properties()
                .map(|(k, val)| (k.to_owned(), val.to_owned()))
                .collect(),
            body: v.body.to_vec(),
            queue_offset: QueueOffset(v.queue_offset),
            physical_offset: PhysicalOffset(v.physical_offset),
            size: v.size,
            store_timestamp_ms: v.store_timestamp_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AppendMessage {
        AppendMessage {
            topic: "TopicA".into(),
            queue_id: 3,
            flags: 0x15,
            tag: Some("TagA".into()),
            keys: vec!["k1".into(), "k2".into()],
            message_id: "01ABCDEF".into(),
            born_timestamp_ms: 1_700_000_000_000,
            born_host: "10.0.0.1:1234".into(),
            store_host: "127.0.0.1:8081".into(),
            reconsume_times: 2,
            prepared_transaction_offset: -7,
            properties: vec![("a".into(), "1".into()), ("UNIQ_KEY".into(), "x".into())],
            body: b"hello body".to_vec(),
        }
    }

    fn sealed(msg: &AppendMessage) -> Vec<u8> {
        let mut buf = Vec::new();
        let crc = encode(msg, &mut buf).unwrap();
        seal(&mut buf, crc, 42, 4096, 1_700_000_000_123);
        buf
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let msg = sample();
        let buf = sealed(&msg);
        assert_eq!(buf.len(), encoded_len(&msg).unwrap());
        let Record::Message(v) = decode(&buf).unwrap() else {
            panic!("not a message")
        };
        assert_eq!(v.size as usize, buf.len());
        assert_eq!((v.topic, v.queue_id, v.flags), ("TopicA", 3, 0x15));
        assert_eq!((v.queue_offset, v.physical_offset), (42, 4096));
        assert_eq!(v.store_timestamp_ms, 1_700_000_000_123);
        assert_eq!(v.born_timestamp_ms, 1_700_000_000_000);
        assert_eq!(v.prepared_transaction_offset, -7);
        assert_eq!(v.reconsume_times, 2);
        assert_eq!(
            (v.born_host, v.store_host),
            ("10.0.0.1:1234", "127.0.0.1:8081")
        );
        assert_eq!((v.message_id, v.tag), ("01ABCDEF", Some("TagA")));
        assert_eq!(v.keys().collect::<Vec<_>>(), vec!["k1", "k2"]);
        assert_eq!(
            v.properties().collect::<Vec<_>>(),
            vec![("a", "1"), ("UNIQ_KEY", "x")]
        );
        assert_eq!(v.body, b"hello body");
        assert_eq!(peek_store_timestamp(&buf).unwrap(), 1_700_000_000_123);
    }

    #[test]
    fn no_tag_differs_from_empty_tag() {
        let mut msg = sample();
        msg.tag = None;
        let bytes = sealed(&msg);
        let Record::Message(v) = decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(v.tag, None);
        msg.tag = Some(String::new());
        let bytes = sealed(&msg);
        let Record::Message(v) = decode(&bytes).unwrap() else {
            panic!()
        };
        assert_eq!(v.tag, Some(""));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let buf = sealed(&sample());
        for i in 0..buf.len() {
            let mut b = buf.clone();
            b[i] ^= 0x40;
            assert!(decode(&b).is_err(), "flip at {i} not detected");
        }
    }

    #[test]
    fn truncations_are_errors() {
        let buf = sealed(&sample());
        for n in 0..buf.len() {
            assert!(decode(&buf[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn filler_round_trip_and_crc() {
        let f = encode_filler(1000, 77);
        assert_eq!(
            decode(&f).unwrap(),
            Record::Filler {
                size: 1000,
                physical_offset: 77
            }
        );
        let mut bad = f;
        bad[20] ^= 1;
        assert!(matches!(decode(&bad), Err(DecodeError::BadCrc { .. })));
        assert!(matches!(
            decode(&encode_filler(8, 0)),
            Err(DecodeError::BadLength { len: 8 })
        ));
    }

    #[test]
    fn oversized_fields_are_typed_errors() {
        let mut msg = sample();
        msg.topic = "t".repeat(70_000);
        assert!(matches!(
            encode(&msg, &mut Vec::new()),
            Err(StoreError::FieldTooLong { field: "topic", .. })
        ));
        let mut msg = sample();
        msg.tag = Some("t".repeat(usize::from(NO_TAG)));
        assert!(matches!(
            encode(&msg, &mut Vec::new()),
            Err(StoreError::FieldTooLong { field: "tag", .. })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        // xorshift so the test is deterministic without a dependency.
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let valid = sealed(&sample());
        for _ in 0..20_000 {
            let len = (next() % 200) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if next() % 2 == 0 && len >= 8 {
                // Plausible header so decoding gets past the magic check.
                let size = (next() % 300) as u32;
                b[..4].copy_from_slice(&size.to_le_bytes());
                let magic = [MESSAGE_MAGIC, FILLER_MAGIC][(next() % 2) as usize];
                b[4..8].copy_from_slice(&magic.to_le_bytes());
            }
            let _ = decode(&b);
            let _ = decode_trusted(&b);
            let _ = peek_store_timestamp(&b);
            // Mutations of a valid record, decoded without the CRC to reach the field parser.
            let mut m = valid.clone();
            let i = (next() as usize) % m.len();
            m[i] = next() as u8;
            if let Ok(Record::Message(v)) = decode_trusted(&m) {
                let _ = v.keys().count();
                let _ = v.properties().count();
            }
        }
    }
}
