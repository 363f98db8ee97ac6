//! Folders of DICOM files: series assembled and ordered along the slice normal, and the older of
//! two studies of a patient hung as prior. The files are built in memory (no patient data).

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// A 16×12 CT slice whose pixels all equal `value`, at z = `z` (written out of order on purpose).
#[allow(clippy::too_many_arguments)]
fn write_slice(dir: &Path, name: &str, patient: &str, study: &str, date: &str, series: &str, instance: i32, z: f64, value: u16) {
    let (rows, cols) = (12u16, 16u16);
    let pixels: Vec<u16> = vec![value; rows as usize * cols as usize];
    let sop = format!("{series}.{instance}");
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
        DataElement::new(tags::PATIENT_ID, VR::LO, patient),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, study),
        DataElement::new(tags::STUDY_DATE, VR::DA, date),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series),
        DataElement::new(tags::MODALITY, VR::CS, "CT"),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, instance.to_string()),
        DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, format!("0\\0\\{z}")),
        DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
        DataElement::new(tags::PIXEL_SPACING, VR::DS, "0.7\\0.7"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(cols)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ]);
    let file = obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)).unwrap();
    file.write_to_file(dir.join(name)).unwrap();
}

#[test]
fn folder_series_are_ordered_along_the_normal() {
    let dir = tempfile::tempdir().unwrap();
    // Instance numbers disagree with positions: positions win.
    for (k, (z, value)) in [(30.0, 300u16), (10.0, 100), (20.0, 200)].into_iter().enumerate() {
        write_slice(dir.path(), &format!("s{k}.dcm"), "P1", "1.2.3", "20240101", "1.2.3.1", 3 - k as i32, z, value);
    }
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    let quiet = |_: f32, _: &str| {};
    let series = tandem::study::load(dir.path(), &quiet).unwrap();
    let values: Vec<f32> = series.frames.iter().map(|f| f.to_gray().data[0]).collect();
    // Rescale applied: stored − 1024.
    assert_eq!(values, vec![100.0 - 1024.0, 200.0 - 1024.0, 300.0 - 1024.0]);
    assert_eq!(series.frames[0].meta.pixel_spacing_mm, Some([0.7, 0.7]));
    assert_eq!(series.frames.iter().map(|f| f.slice_position.unwrap()).collect::<Vec<_>>(), vec![10.0, 20.0, 30.0]);
}

#[test]
fn the_older_study_is_hung_as_prior() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    std::fs::create_dir(dir.path().join("b")).unwrap();
    // The newer study is found first on disk.
    for z in 0..3 {
        write_slice(&dir.path().join("a"), &format!("{z}.dcm"), "P1", "1.2.9", "20250601", "1.2.9.1", z + 1, z as f64, 500);
        write_slice(&dir.path().join("b"), &format!("{z}.dcm"), "P1", "1.2.4", "20230115", "1.2.4.1", z + 1, z as f64, 400);
    }
    let quiet = |_: f32, _: &str| {};
    let (prior, current) = tandem::study::hang_folder(dir.path(), &quiet).unwrap();
    assert_eq!(prior.meta.study_date.as_deref(), Some("20230115"));
    assert_eq!(current.meta.study_date.as_deref(), Some("20250601"));
    assert_eq!(prior.frames.len(), 3);
    // Two different patients in one folder are not hung together.
    write_slice(&dir.path().join("b"), "x.dcm", "P2", "1.2.5", "20240101", "1.2.5.1", 1, 0.0, 1);
    let err = tandem::study::hang_folder(dir.path(), &quiet).unwrap_err();
    assert!(err.to_string().contains("different patients"), "{err}");
}

#[test]
fn a_missing_or_empty_path_is_a_clear_error() {
    let quiet = |_: f32, _: &str| {};
    let dir = tempfile::tempdir().unwrap();
    assert!(tandem::study::load(dir.path(), &quiet).unwrap_err().to_string().contains("empty"));
    assert!(tandem::study::load(&dir.path().join("nope.dcm"), &quiet).is_err());
}

/// What the corner text reads from a file: lossy compression (the attribute of pixels that were
/// lossy-compressed once and are stored uncompressed now, or a lossy transfer syntax), the
/// patient's name, and the orientation markers.
#[test]
fn lossy_compression_patient_name_and_orientation_are_read_for_the_corner_text() {
    let quiet = |_: f32, _: &str| {};
    let dir = tempfile::tempdir().unwrap();
    write_slice(dir.path(), "plain.dcm", "P1", "1.2.3", "20240101", "1.2.3.1", 1, 0.0, 100);
    let plain = tandem::study::load(&dir.path().join("plain.dcm"), &quiet).unwrap();
    let m = &plain.frames[0].meta;
    assert!(!m.is_lossy(), "explicit VR little endian, no Lossy Image Compression");
    let markers = tandem::study::orientation::markers(m.image_orientation.unwrap()).unwrap();
    assert_eq!([markers.left, markers.right, markers.top, markers.bottom], ["R", "L", "A", "P"]);

    // The same slice, once lossy-compressed (0028,2110 "01"), with a name; coronal.
    let mut obj = dicom_object::open_file(dir.path().join("plain.dcm")).unwrap();
    obj.put(DataElement::new(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "01"));
    obj.put(DataElement::new(tags::PATIENT_NAME, VR::PN, "DOE^JANE"));
    obj.put(DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\0\\-1"));
    obj.write_to_file(dir.path().join("lossy.dcm")).unwrap();
    let lossy = tandem::study::load(&dir.path().join("lossy.dcm"), &quiet).unwrap();
    let m = &lossy.frames[0].meta;
    assert!(m.is_lossy());
    assert_eq!(m.patient_name_pretty().as_deref(), Some("DOE, JANE"));
    let markers = tandem::study::orientation::markers(m.image_orientation.unwrap()).unwrap();
    assert_eq!([markers.top, markers.bottom], ["H", "F"]);

    // A baseline JPEG file is lossy by its transfer syntax.
    let jpeg = tandem::study::load(Path::new("tests/data/dicom/SC_rgb_jpeg_dcmtk.dcm"), &quiet).unwrap();
    assert_eq!(jpeg.frames[0].meta.transfer_syntax.as_deref(), Some("1.2.840.10008.1.2.4.50"));
    assert!(jpeg.frames[0].meta.is_lossy());
}
