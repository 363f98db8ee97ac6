//! What a file may make Tandem allocate: declared sizes are checked against the bytes that back
//! them, and against a configurable cap, before any buffer is sized from them.

use crate::study::StudyError;

/// Decoded pixel bytes one image may take unless `TANDEM_MAX_IMAGE_MB` says otherwise.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 2 << 30;

/// Decoded samples that one byte of compressed data may stand for. Real images compress far less
/// (lossless 2–4:1, lossy rarely 50:1); past this a header is lying about its size.
pub const MAX_SAMPLES_PER_COMPRESSED_BYTE: u64 = 128;

/// Samples any compressed image may have whatever its size: small blank images compress to
/// almost nothing and must still open.
pub const SMALL_IMAGE_SAMPLES: u64 = 1 << 24;

/// The cap on one image's decoded bytes: `TANDEM_MAX_IMAGE_MB` (megabytes) when set and valid.
pub fn max_image_bytes() -> u64 {
    std::env::var("TANDEM_MAX_IMAGE_MB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&mb| mb > 0)
        .map_or(DEFAULT_MAX_IMAGE_BYTES, |mb| mb.saturating_mul(1 << 20))
}

/// Refuses `bytes` of decoded pixels above the cap, naming the setting that raises it.
pub fn check_cap(bytes: u64) -> Result<(), StudyError> {
    let cap = max_image_bytes();
    if bytes > cap {
        return Err(StudyError::Corrupt(format!(
            "the image would take {} of memory decoded, more than the {} limit (set TANDEM_MAX_IMAGE_MB to raise it)",
            human_bytes(bytes),
            human_bytes(cap)
        )));
    }
    Ok(())
}

/// Refuses compressed data that claims more samples than any codec makes of its size.
pub fn check_compressed(samples: u64, compressed_bytes: u64) -> Result<(), StudyError> {
    let bound = compressed_bytes.saturating_mul(MAX_SAMPLES_PER_COMPRESSED_BYTE).saturating_add(SMALL_IMAGE_SAMPLES);
    if samples > bound {
        return Err(StudyError::Corrupt(format!(
            "the header declares {samples} samples for {} of compressed data, more than any codec produces",
            human_bytes(compressed_bytes)
        )));
    }
    Ok(())
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["bytes", "KB", "MB", "GB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{b} bytes") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// How a data set's element headers are encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    pub explicit_vr: bool,
    pub big_endian: bool,
}

/// Walks the element headers of an encoded data set and refuses any element whose declared
/// length runs past the end of the data. dicom-rs sizes each value's buffer from that length
/// before reading it, so one corrupt length would otherwise allocate up to 4 GB. The walk reads
/// headers exactly as dicom-rs does: an unknown VR is UN with a 4-byte length, and the inside of
/// an undefined-length UN is implicit VR little endian.
pub fn check_element_lengths(data: &[u8], enc: Encoding) -> Result<(), StudyError> {
    walk(data, enc, None).map(|_| ())
}

/// Checks the file meta group (explicit VR little endian, group 0002) and returns its length.
pub fn check_meta_lengths(data: &[u8]) -> Result<usize, StudyError> {
    walk(data, Encoding { explicit_vr: true, big_endian: false }, Some(0x0002))
}

/// What an undefined-length value being walked holds, and how its elements are encoded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    Sequence(Encoding),
    Fragments,
}

fn read_u16(data: &[u8], p: usize, big_endian: bool) -> Option<u16> {
    let b = data.get(p..p + 2)?;
    Some(if big_endian { u16::from_be_bytes([b[0], b[1]]) } else { u16::from_le_bytes([b[0], b[1]]) })
}

fn read_u32(data: &[u8], p: usize, big_endian: bool) -> Option<u32> {
    let b = data.get(p..p + 4)?;
    let a = [b[0], b[1], b[2], b[3]];
    Some(if big_endian { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
}

/// The walk behind both checks; with `only_group`, stops where that group ends.
fn walk(data: &[u8], outer: Encoding, only_group: Option<u16>) -> Result<usize, StudyError> {
    use dicom_core::VR;
    let too_long = |group: u16, element: u16, len: u64, left: usize| {
        StudyError::Corrupt(format!("element ({group:04X},{element:04X}) declares {len} bytes but only {left} remain in the file"))
    };
    let mut open: Vec<Open> = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= data.len() {
        let enc = match open.iter().rev().find_map(|o| if let Open::Sequence(e) = o { Some(*e) } else { None }) {
            Some(e) => e,
            None => outer,
        };
        let (Some(group), Some(element)) = (read_u16(data, pos, enc.big_endian), read_u16(data, pos + 2, enc.big_endian)) else {
            break;
        };
        if only_group.is_some_and(|g| g != group) {
            break;
        }
        if group == 0xFFFE {
            // Items and delimiters: a 4-byte length in every encoding.
            let Some(len) = read_u32(data, pos + 4, enc.big_endian) else { break };
            pos += 8;
            match element {
                0xE000 if len != u32::MAX => {
                    let left = data.len() - pos;
                    if len as usize > left {
                        return Err(too_long(group, element, len as u64, left));
                    }
                    // A fragment is opaque; an item of a sequence holds elements to walk.
                    if open.last() == Some(&Open::Fragments) {
                        pos += len as usize;
                    }
                }
                0xE0DD => {
                    open.pop();
                }
                _ => {}
            }
            continue;
        }
        let (len, header, vr) = if enc.explicit_vr {
            let vr = VR::from_binary([data[pos + 4], data[pos + 5]]).unwrap_or(VR::UN);
            let short = matches!(
                vr,
                VR::AE
                    | VR::AS
                    | VR::AT
                    | VR::CS
                    | VR::DA
                    | VR::DS
                    | VR::DT
                    | VR::FL
                    | VR::FD
                    | VR::IS
                    | VR::LO
                    | VR::LT
                    | VR::PN
                    | VR::SH
                    | VR::SL
                    | VR::SS
                    | VR::ST
                    | VR::TM
                    | VR::UI
                    | VR::UL
                    | VR::US
            );
            if short {
                let Some(len) = read_u16(data, pos + 6, enc.big_endian) else { break };
                (len as u32, 8, Some(vr))
            } else {
                let Some(len) = read_u32(data, pos + 8, enc.big_endian) else { break };
                (len, 12, Some(vr))
            }
        } else {
            let Some(len) = read_u32(data, pos + 4, enc.big_endian) else { break };
            (len, 8, None)
        };
        pos += header;
        if len == u32::MAX {
            open.push(if (group, element) == (0x7FE0, 0x0010) && vr != Some(VR::SQ) {
                Open::Fragments
            } else if vr == Some(VR::UN) {
                Open::Sequence(Encoding { explicit_vr: false, big_endian: false })
            } else {
                Open::Sequence(enc)
            });
            continue;
        }
        let left = data.len().saturating_sub(pos);
        if len as usize > left {
            return Err(too_long(group, element, len as u64, left));
        }
        let is_sequence = match vr {
            Some(vr) => vr == VR::SQ,
            None => implicit_is_sequence(group, element),
        };
        if !is_sequence {
            pos += len as usize;
        }
    }
    Ok(pos)
}

/// Inflates a deflated data set, refusing to grow it past `limit` bytes (a deflate bomb).
pub fn inflate_bounded(data: &[u8], limit: u64) -> Result<Vec<u8>, StudyError> {
    use std::io::Read;
    let mut out = Vec::new();
    let mut reader = flate2::read::DeflateDecoder::new(data).take(limit + 1);
    reader.read_to_end(&mut out).map_err(|e| StudyError::Corrupt(format!("the deflated data set cannot be inflated: {e}")))?;
    if out.len() as u64 > limit {
        return Err(StudyError::Corrupt(format!("the deflated data set inflates past {}", human_bytes(limit))));
    }
    Ok(out)
}

/// Whether the standard dictionary names this tag a sequence (implicit VR carries no VR).
fn implicit_is_sequence(group: u16, element: u16) -> bool {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    dicom_dictionary_std::StandardDataDictionary
        .by_tag(dicom_core::Tag(group, element))
        .is_some_and(|e| e.vr().relaxed() == dicom_core::VR::SQ)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LE_EXPLICIT: Encoding = Encoding { explicit_vr: true, big_endian: false };
    const LE_IMPLICIT: Encoding = Encoding { explicit_vr: false, big_endian: false };

    fn explicit_short(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        v.extend_from_slice(value);
        v
    }

    #[test]
    fn honest_lengths_pass_and_a_lying_one_is_refused() {
        let mut data = explicit_short((0x0010, 0x0010), b"PN", b"DOE^JOHN");
        data.extend(explicit_short((0x0028, 0x0010), b"US", &64u16.to_le_bytes()));
        assert!(check_element_lengths(&data, LE_EXPLICIT).is_ok());
        // OB with a 4 GB length and 4 bytes behind it.
        data.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF, 1, 2, 3, 4]);
        let err = check_element_lengths(&data, LE_EXPLICIT).unwrap_err().to_string();
        assert!(err.contains("(7FE0,0010)") && err.contains("4294967280"), "{err}");
    }

    #[test]
    fn an_unknown_vr_is_read_as_un_with_a_long_length() {
        // dicom-rs reads VR "zz" as UN: reserved bytes, then a 4-byte length of 0x7FFFFFFF.
        let data = [0x09, 0x00, 0x10, 0x00, b'z', b'z', 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 1, 2];
        assert!(check_element_lengths(&data, LE_EXPLICIT).is_err());
    }

    #[test]
    fn an_undefined_length_un_holds_implicit_elements() {
        let mut data = vec![0x09, 0x00, 0x10, 0x00, b'U', b'N', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        // Implicit VR inside: tag, then a 4-byte length that lies.
        data.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x40]);
        assert!(check_element_lengths(&data, LE_EXPLICIT).is_err());
    }

    #[test]
    fn implicit_sequences_are_walked_into() {
        // (0008,1140) Referenced Image Sequence, defined length 16, holding one item whose
        // element lies about its length.
        let mut data = Vec::new();
        data.extend_from_slice(&[0x08, 0x00, 0x40, 0x11, 16, 0, 0, 0]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 8, 0, 0, 0]);
        data.extend_from_slice(&[0x08, 0x00, 0x50, 0x11, 0x00, 0x00, 0x00, 0x40]);
        assert!(check_element_lengths(&data, LE_IMPLICIT).is_err());
    }

    #[test]
    fn fragments_are_skipped_whole() {
        let mut data = Vec::new();
        data.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        // A fragment whose bytes look like an element header with a huge length.
        data.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 12, 0, 0, 0]);
        data.extend_from_slice(&[0x10, 0x00, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF]);
        data.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert!(check_element_lengths(&data, LE_EXPLICIT).is_ok());
    }

    #[test]
    fn compressed_bounds() {
        assert!(check_compressed(64 * 64, 10).is_ok(), "a small blank image");
        assert!(check_compressed(65535 * 65535, 130_000).is_err());
        assert!(check_compressed(512 * 512 * 100, 1_000_000).is_ok());
    }
}
