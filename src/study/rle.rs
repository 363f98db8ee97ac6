//! DICOM RLE Lossless decoding (PS3.5 Annex G) for any bits allocated, including the 32-bit
//! data that dicom-pixeldata declines.

use crate::study::StudyError;

/// Decodes one RLE frame into interleaved little-endian samples:
/// `rows * cols * samples * bytes_per_sample` bytes.
pub fn decode_frame(frame: &[u8], rows: usize, cols: usize, samples: usize, bytes_per_sample: usize) -> Result<Vec<u8>, StudyError> {
    let corrupt = |m: &str| StudyError::Corrupt(format!("RLE: {m}"));
    if frame.len() < 64 {
        return Err(corrupt("frame shorter than its 64-byte header"));
    }
    let word = |i: usize| u32::from_le_bytes([frame[4 * i], frame[4 * i + 1], frame[4 * i + 2], frame[4 * i + 3]]) as usize;
    let segments = word(0);
    let expected = samples * bytes_per_sample;
    if segments != expected || segments > 15 {
        return Err(corrupt(&format!("{segments} segments where {expected} were expected")));
    }
    let pixels = rows * cols;
    let mut out = vec![0u8; pixels * expected];
    for seg in 0..segments {
        let start = word(seg + 1);
        let end = if seg + 1 < segments { word(seg + 2) } else { frame.len() };
        if start < 64 || start > end || end > frame.len() {
            return Err(corrupt("segment offsets out of range"));
        }
        let decoded = unpack_bits(&frame[start..end], pixels);
        // pydicom refuses a short segment too: padding would show made-up pixels.
        if decoded.len() < pixels {
            return Err(corrupt(&format!("segment {} decodes to {} bytes where the frame needs {pixels}", seg + 1, decoded.len())));
        }
        // Segments run most significant byte first within each sample.
        let sample = seg / bytes_per_sample;
        let byte_in_sample = bytes_per_sample - 1 - seg % bytes_per_sample;
        for (px, &v) in decoded.iter().enumerate() {
            out[(px * samples + sample) * bytes_per_sample + byte_in_sample] = v;
        }
    }
    Ok(out)
}

/// PackBits, stopping at `limit` bytes.
fn unpack_bits(src: &[u8], limit: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(limit);
    let mut i = 0;
    while i < src.len() && out.len() < limit {
        let n = src[i] as i8;
        i += 1;
        if n >= 0 {
            let count = n as usize + 1;
            let end = (i + count).min(src.len());
            out.extend_from_slice(&src[i..end]);
            i = end;
        } else if n != -128 {
            let count = 1 - n as isize;
            if let Some(&v) = src.get(i) {
                out.extend(std::iter::repeat_n(v, count as usize));
            }
            i += 1;
        }
    }
    // A run may end past the frame: the excess is padding, as pydicom drops it.
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packbits_literal_and_run() {
        // literal of 3, run of 4 × 9
        assert_eq!(unpack_bits(&[2, 1, 2, 3, (-3i8) as u8, 9], 7), vec![1, 2, 3, 9, 9, 9, 9]);
    }

    #[test]
    fn sixteen_bit_segments_interleave_msb_first() {
        let mut frame = vec![0u8; 64];
        frame[0] = 2;
        frame[4] = 64;
        frame[8] = 67;
        // segment 1 (high bytes): literal [0x12, 0x34]; segment 2 (low bytes): literal [0x56, 0x78]
        frame.extend_from_slice(&[1, 0x12, 0x34, 1, 0x56, 0x78]);
        let out = decode_frame(&frame, 1, 2, 1, 2).unwrap();
        assert_eq!(out, vec![0x56, 0x12, 0x78, 0x34]);
    }

    #[test]
    fn corrupt_headers_are_errors() {
        assert!(decode_frame(&[0u8; 10], 1, 1, 1, 1).is_err());
        let mut frame = vec![0u8; 64];
        frame[0] = 1;
        frame[4] = 200;
        assert!(decode_frame(&frame, 1, 1, 1, 1).is_err());
    }

    #[test]
    fn a_short_segment_is_an_error_not_padding() {
        let mut frame = vec![0u8; 64];
        frame[0] = 1;
        frame[4] = 64;
        // A run of 4 bytes for a 2×4 frame that needs 8.
        frame.extend_from_slice(&[(-3i8) as u8, 7]);
        let err = decode_frame(&frame, 2, 4, 1, 1).unwrap_err().to_string();
        assert!(err.contains("decodes to 4 bytes"), "{err}");
    }
}
