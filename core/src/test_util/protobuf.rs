//! A minimal protobuf wire-format splitter for mutation tests: finds top-level fields
//! so mutators can splice, drop or duplicate them (used by
//! `core/tests/garbage_containers_never_panic.rs` and the fuzz targets).
// Field spans come from `fields`, which yields only ranges inside the message it split.
#![allow(clippy::cast_possible_truncation, clippy::indexing_slicing)]

use std::ops::Range;

/// Reads a varint at `*pos`, advancing it (`None` if the bytes end first or it is
/// longer than ten bytes).
pub fn read_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*pos)?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Appends `value` as a varint.
pub fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// One top-level protobuf field: where it is, its number and, if length-delimited,
/// where its contents are.
pub struct Field {
    /// The whole field: key, length prefix if any, and value.
    pub span: Range<usize>,
    /// The field number.
    pub number: u64,
    /// The value of a length-delimited field.
    pub contents: Option<Range<usize>>,
}

/// Splits a protobuf message into its top-level fields (None if not well-formed).
pub fn fields(bytes: &[u8]) -> Option<Vec<Field>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        let start = pos;
        let key = read_varint(bytes, &mut pos)?;
        let contents = match key & 7 {
            0 => {
                read_varint(bytes, &mut pos)?;
                None
            }
            1 => {
                pos = pos.checked_add(8)?;
                None
            }
            2 => {
                let len = usize::try_from(read_varint(bytes, &mut pos)?).ok()?;
                let begin = pos;
                pos = pos.checked_add(len)?;
                Some(begin..pos)
            }
            5 => {
                pos = pos.checked_add(4)?;
                None
            }
            _ => return None,
        };
        if pos > bytes.len() {
            return None;
        }
        out.push(Field {
            span: start..pos,
            number: key >> 3,
            contents,
        });
    }
    Some(out)
}

/// `bytes` with fields `a` and `b` exchanged (`None` if they are the same field).
pub fn swap_fields(bytes: &[u8], a: &Field, b: &Field) -> Option<Vec<u8>> {
    let (a, b) = if a.span.start <= b.span.start {
        (a, b)
    } else {
        (b, a)
    };
    if a.span == b.span {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..a.span.start]);
    out.extend_from_slice(&bytes[b.span.clone()]);
    out.extend_from_slice(&bytes[a.span.end..b.span.start]);
    out.extend_from_slice(&bytes[a.span.clone()]);
    out.extend_from_slice(&bytes[b.span.end..]);
    Some(out)
}

/// `bytes` with `field` repeated at the end.
pub fn repeat_field(bytes: &[u8], field: &Field) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out.extend_from_slice(&bytes[field.span.clone()]);
    out
}

/// `bytes` without `field`.
pub fn drop_field(bytes: &[u8], field: &Field) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..field.span.start]);
    out.extend_from_slice(&bytes[field.span.end..]);
    out
}

/// `bytes` with `field` replaced by the bytes of `from`, a field of `donor`.
pub fn replace_field(bytes: &[u8], field: &Field, donor: &[u8], from: &Field) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..field.span.start]);
    out.extend_from_slice(&donor[from.span.clone()]);
    out.extend_from_slice(&bytes[field.span.end..]);
    out
}

/// Appends a length-delimited field `number` holding `contents`.
pub fn write_length_delimited(out: &mut Vec<u8>, number: u64, contents: &[u8]) {
    write_varint(out, (number << 3) | 2);
    write_varint(out, contents.len() as u64);
    out.extend_from_slice(contents);
}
