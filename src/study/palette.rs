//! Lookup tables read from DICOM: palette colour (plain and segmented), Modality LUT and VOI LUT.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use crate::study::dicom::{Attrs, LutDescriptor, lut_descriptor, lut_words};

/// One channel of a palette: index (stored value − first mapped) → 8-bit output.
#[derive(Clone, Debug)]
pub struct Channel {
    first_mapped: i64,
    values: Vec<u8>,
}

impl Channel {
    fn lookup(&self, v: f64) -> u8 {
        let i = (v as i64 - self.first_mapped).clamp(0, self.values.len() as i64 - 1);
        self.values[i as usize]
    }
}

/// RGB palette of a PALETTE COLOR image.
#[derive(Clone, Debug)]
pub struct Palette {
    channels: [Channel; 3],
}

impl Palette {
    pub fn read(obj: &InMemDicomObject) -> Option<Palette> {
        let desc = [
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
        ];
        let data = [
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ];
        let segmented = [
            tags::SEGMENTED_RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
            tags::SEGMENTED_BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ];
        let mut channels = Vec::with_capacity(3);
        for k in 0..3 {
            let d = lut_descriptor(obj.get(desc[k])?, false)?;
            let words =
                if let Some(e) = obj.get(data[k]) { lut_words(e) } else { expand_segmented(&lut_words(obj.get(segmented[k])?), d.entries) };
            channels.push(channel(d, &words)?);
        }
        let [r, g, b]: [Channel; 3] = channels.try_into().ok()?;
        Some(Palette { channels: [r, g, b] })
    }

    pub fn apply(&self, v: f64) -> [u8; 3] {
        [self.channels[0].lookup(v), self.channels[1].lookup(v), self.channels[2].lookup(v)]
    }
}

fn channel(d: LutDescriptor, words: &[u16]) -> Option<Channel> {
    if words.is_empty() {
        return None;
    }
    let mut w: Vec<u16> = words.iter().copied().take(d.entries).collect();
    w.resize(d.entries, *w.last()?);
    // 16-bit entries, or 8-bit entries that some writers left in the high byte.
    let wide = d.bits > 8 || w.iter().any(|&x| x > 255);
    Some(Channel { first_mapped: d.first_mapped, values: w.iter().map(|&x| if wide { (x >> 8) as u8 } else { x as u8 }).collect() })
}

/// Expands segmented palette data (PS3.3 C.7.9.2): discrete, linear and indirect segments.
fn expand_segmented(words: &[u16], entries: usize) -> Vec<u16> {
    let mut out: Vec<u16> = Vec::with_capacity(entries);
    expand_into(words, &mut out, entries, 0);
    out
}

fn expand_into(words: &[u16], out: &mut Vec<u16>, limit: usize, depth: usize) {
    let mut i = 0;
    while i + 1 < words.len() && out.len() < limit {
        let (op, n) = (words[i], words[i + 1] as usize);
        match op {
            0 => {
                let end = (i + 2 + n).min(words.len());
                out.extend_from_slice(&words[i + 2..end]);
                i = end;
            }
            1 => {
                let Some(&y1) = words.get(i + 2) else { break };
                let y0 = out.last().copied().unwrap_or(y1) as f64;
                for k in 1..=n {
                    out.push((y0 + (y1 as f64 - y0) * k as f64 / n as f64).round() as u16);
                }
                i += 3;
            }
            2 if depth < 4 => {
                let (Some(&lo), Some(&hi)) = (words.get(i + 2), words.get(i + 3)) else { break };
                let offset = ((hi as usize) << 16 | lo as usize) / 2;
                // Copy `n` segments starting at word `offset`.
                let mut j = offset;
                for _ in 0..n {
                    if j + 1 >= words.len() {
                        break;
                    }
                    let seg_len = match words[j] {
                        0 => 2 + words[j + 1] as usize,
                        1 => 3,
                        _ => break,
                    };
                    let end = (j + seg_len).min(words.len());
                    expand_into(&words[j..end], out, limit, depth + 1);
                    j = end;
                }
                i += 4;
            }
            _ => break,
        }
    }
    out.truncate(limit);
}

/// Modality LUT Sequence table: stored value → modality value.
#[derive(Clone, Debug)]
pub struct ModalityLut {
    first_mapped: i64,
    values: Vec<f32>,
}

impl ModalityLut {
    pub fn read(obj: &InMemDicomObject, signed: bool) -> Option<ModalityLut> {
        let item = obj.items_of(tags::MODALITY_LUT_SEQUENCE)?.first()?;
        let (d, words) = lut_item(item, signed)?;
        Some(ModalityLut { first_mapped: d.first_mapped, values: words.iter().map(|&w| w as f32).collect() })
    }

    pub fn apply(&self, v: f64) -> f32 {
        let i = (v as i64 - self.first_mapped).clamp(0, self.values.len() as i64 - 1);
        self.values[i as usize]
    }
}

/// The first VOI LUT Sequence item as a table in modality units.
pub fn voi_lut(obj: &InMemDicomObject, signed: bool) -> Option<crate::study::VoiLut> {
    let item = obj.items_of(tags::VOILUT_SEQUENCE)?.first()?;
    let (d, words) = lut_item(item, signed)?;
    Some(crate::study::VoiLut {
        first_mapped: d.first_mapped as f32,
        data: words.iter().map(|&w| w as f32).collect(),
        max_output: ((1u32 << d.bits) - 1) as f32,
        explanation: item.str_of(tags::LUT_EXPLANATION),
    })
}

fn lut_item(item: &InMemDicomObject, signed: bool) -> Option<(LutDescriptor, Vec<u16>)> {
    let d = lut_descriptor(item.get(tags::LUT_DESCRIPTOR)?, signed)?;
    let mut words = lut_words(item.get(Tag(0x0028, 0x3006))?);
    if words.is_empty() {
        return None;
    }
    words.resize(d.entries, *words.last()?);
    Some((d, words))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segmented_discrete_then_linear() {
        // discrete [0, 10], then linear to 40 over 3 entries
        let words = [0, 2, 0, 10, 1, 3, 40];
        assert_eq!(expand_segmented(&words, 5), vec![0, 10, 20, 30, 40]);
    }
}
