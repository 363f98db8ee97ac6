//! How to search one image for a region of another, from what their headers say: another
//! plane of the same volume, or the same region at another time or in another contrast.

use crate::grounding::geometry::BBox;
use crate::grounding::infer::LocateHint;
use crate::study::Meta;

/// Slice normal (row × column direction cosines) of an orientation.
fn normal(o: &[f64; 6]) -> [f64; 3] {
    let (r, c) = ([o[0], o[1], o[2]], [o[3], o[4], o[5]]);
    [r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0]]
}

/// Whether the two images are planes at (nearly) right angles: within about 20°.
pub fn orthogonal_planes(a: &Meta, b: &Meta) -> bool {
    match (a.image_orientation, b.image_orientation) {
        (Some(oa), Some(ob)) => {
            let (na, nb) = (normal(&oa), normal(&ob));
            let dot: f64 = na.iter().zip(&nb).map(|(x, y)| x * y).sum();
            dot.abs() < 0.35
        }
        _ => false,
    }
}

/// The hint for finding `reference_box` (in reference pixels) in the target: another plane of
/// the volume is searched along the shared axis; anything else (another time, contrast or
/// modality of the same region) is registered first, with a broad search around the same
/// relative place when registration fails. `scale` maps reference pixels to target pixels; `target_side` is the
/// target's longest side.
pub fn between(reference: &Meta, target: &Meta, reference_box: BBox, scale: (f32, f32), target_side: f32) -> LocateHint {
    let (cx, cy) = reference_box.centre();
    let broad = LocateHint { expected_centre: Some((cx * scale.0, cy * scale.1)), sigma_px: 0.25 * target_side, ..Default::default() };
    if orthogonal_planes(reference, target) {
        let b = reference_box.scale(scale.0, scale.1);
        // Reformats of one acquisition share its intensity scale.
        let same_volume = reference.series_uid == target.series_uid
            || (reference.frame_of_reference_uid.is_some() && reference.frame_of_reference_uid == target.frame_of_reference_uid);
        let same_scale = same_volume && reference.modality == target.modality;
        LocateHint { same_scale, orthogonal_to: Some(b), ..Default::default() }
    } else {
        LocateHint { register_first: true, ..broad }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(modality: &str, description: &str, orientation: [f64; 6]) -> Meta {
        Meta {
            modality: Some(modality.into()),
            series_description: Some(description.into()),
            study_uid: Some("1.2.3".into()),
            image_orientation: Some(orientation),
            ..Default::default()
        }
    }

    const AXIAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0];
    const CORONAL: [f64; 6] = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0];

    #[test]
    fn headers_choose_the_search() {
        let b = BBox::new(10.0, 10.0, 30.0, 40.0);
        let h = between(&meta("CT", "Body", AXIAL), &meta("CT", "Body", CORONAL), b, (1.0, 1.0), 512.0);
        assert!(h.orthogonal_to.is_some() && !h.register_first);
        let h = between(&meta("MR", "T1", AXIAL), &meta("MR", "T2 FLAIR", AXIAL), b, (1.0, 1.0), 512.0);
        assert!(h.register_first && h.orthogonal_to.is_none());
        let h = between(&meta("CR", "Chest", AXIAL), &meta("CR", "Chest PA", AXIAL), b, (2.0, 2.0), 512.0);
        assert!(h.register_first && h.orthogonal_to.is_none());
        assert_eq!(h.expected_centre, Some((40.0, 50.0)));
    }
}
