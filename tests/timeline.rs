//! A patient over time in the viewer, driven through egui_kittest: a folder of three CT studies
//! opens as a timeline, two are hung, whole-series "Find changes" finds the lesion through its
//! slices, "Track" follows it to the third timepoint, the size-over-time plot shows it, and the
//! saved document opens again with the folder. The studies are written here as DICOM from a real
//! CT slice (tests/data/dicom/CT_small.dcm) with a synthetic lesion.

use std::path::Path;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use eframe::egui::Vec2;
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable;
use tandem::annotation::FindingKind;
use tandem::grounding::{BBox, DevicePreference};
use tandem::study::GrayImage;
use tandem::viewer::pane::Role;
use tandem::viewer::{App, AppCommand, Launch};

fn ct() -> GrayImage {
    let quiet = |_: f32, _: &str| {};
    tandem::study::load(Path::new("tests/data/dicom/CT_small.dcm"), &quiet).unwrap().frames[0].to_gray()
}

/// Slice `k` of the synthetic anatomy: the CT slice shifted a little more at each level, with a
/// bright dot that moves across from slice to slice (no two levels look alike).
fn anatomy(base: &GrayImage, k: usize) -> GrayImage {
    let shifted = base.crop(k as isize, (k / 2) as isize, base.width, base.height, -1000.0);
    let cx = 20.0 + 11.0 * k as f32;
    GrayImage::from_fn(base.width, base.height, |x, y| {
        let d = ((x as f32 - cx).powi(2) + (y as f32 - 100.0).powi(2)).sqrt();
        shifted.get(x, y) + if d < 5.0 { 300.0 } else { 0.0 }
    })
}

fn with_lesion(img: &GrayImage, cx: f32, cy: f32, r: f32) -> GrayImage {
    GrayImage::from_fn(img.width, img.height, |x, y| {
        let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
        img.get(x, y) + if d < r { 500.0 } else { 0.0 }
    })
}

/// The lesion, in the paraspinal muscle.
const LESION: (f32, f32) = (96.0, 88.0);

/// One study of `n` slices 2.5 mm apart: a lesion of radius `r` on slice 4 (two thirds of it on
/// slices 3 and 5), none when `r` is 0.
fn write_study(dir: &Path, study: usize, date: &str, n: usize, r: f32) {
    write_levels(dir, study, date, 0..n, 0.0, "1.2.826.0.17.9", r, false);
}

/// One study of the anatomy's `levels`, level L at z = `z0` + 2.5 L mm in `frame_of_reference`:
/// a lesion of radius `r` on level 4 (two thirds of it on levels 3 and 5), none when `r` is 0.
/// `coarse`: half the matrix, pixels of twice the size (2 × 2 averaged), over the same field.
#[allow(clippy::too_many_arguments)]
fn write_levels(
    dir: &Path,
    study: usize,
    date: &str,
    levels: std::ops::Range<usize>,
    z0: f64,
    frame_of_reference: &str,
    r: f32,
    coarse: bool,
) {
    std::fs::create_dir_all(dir).unwrap();
    let base = ct();
    for (j, k) in levels.enumerate() {
        let radius = match k {
            4 => r,
            3 | 5 => r * 2.0 / 3.0,
            _ => 0.0,
        };
        let img = anatomy(&base, k);
        let img = if radius > 0.0 { with_lesion(&img, LESION.0, LESION.1, radius) } else { img };
        let img = if coarse {
            GrayImage::from_fn(img.width / 2, img.height / 2, |x, y| {
                (img.get(2 * x, 2 * y) + img.get(2 * x + 1, 2 * y) + img.get(2 * x, 2 * y + 1) + img.get(2 * x + 1, 2 * y + 1)) / 4.0
            })
        } else {
            img
        };
        // A coarse pixel's centre lies half a fine pixel (0.35 mm) in from the fine one's.
        let (spacing, corner) = if coarse { (1.4, 0.35) } else { (0.7, 0.0) };
        write_image(dir, study, date, frame_of_reference, j, &img, spacing, [corner, corner, z0 + 2.5 * k as f64]);
    }
}

/// Slice `j` of study `study` (one series) as a CT file: `img` (HU) of `spacing` mm pixels, its
/// first pixel's centre at `position`, axial in `frame_of_reference`.
#[allow(clippy::too_many_arguments)]
fn write_image(
    dir: &Path,
    study: usize,
    date: &str,
    frame_of_reference: &str,
    j: usize,
    img: &GrayImage,
    spacing: f64,
    position: [f64; 3],
) {
    let series_uid = format!("1.2.826.0.17.{study}.2");
    let pixels: Vec<u16> = img.data.iter().map(|v| (v + 1024.0).round().clamp(0.0, 4095.0) as u16).collect();
    let sop = format!("{series_uid}.{}", j + 1);
    let elements = vec![
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, sop.as_str()),
        DataElement::new(tags::PATIENT_ID, VR::LO, "SYNTH-17"),
        DataElement::new(tags::PATIENT_NAME, VR::PN, "Timeline^Test"),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, format!("1.2.826.0.17.{study}")),
        DataElement::new(tags::STUDY_DATE, VR::DA, date),
        DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, format!("CT chest {}", study + 1)),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str()),
        DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, frame_of_reference),
        DataElement::new(tags::MODALITY, VR::CS, "CT"),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, (j + 1).to_string()),
        DataElement::new(tags::PIXEL_SPACING, VR::DS, format!("{spacing}\\{spacing}")),
        DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, format!("{}\\{}\\{}", position[0], position[1], position[2])),
        DataElement::new(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, "1\\0\\0\\0\\1\\0"),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(img.height as u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(img.width as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
        DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
        DataElement::new(tags::RESCALE_INTERCEPT, VR::DS, "-1024"),
        DataElement::new(tags::RESCALE_SLOPE, VR::DS, "1"),
        DataElement::new(tags::WINDOW_CENTER, VR::DS, "40"),
        DataElement::new(tags::WINDOW_WIDTH, VR::DS, "400"),
        DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
    ];
    let file = InMemDicomObject::from_element_iter(elements)
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap();
    file.write_to_file(dir.join(format!("im{:03}.dcm", j))).unwrap();
}

/// Baseline, growth, response: three studies of one patient in one folder, written out of date
/// order (the timeline orders them by Study Date, not by folder name).
fn three_timepoints(dir: &Path) {
    write_study(&dir.join("b-2024-07"), 1, "20240701", 8, 9.0);
    write_study(&dir.join("a-2025-01"), 2, "20250101", 8, 7.0);
    write_study(&dir.join("c-2024-01"), 0, "20240101", 8, 6.0);
}

fn harness_for(launch: Launch) -> Harness<'static, App> {
    Harness::builder()
        .with_size(Vec2::new(1500.0, 950.0))
        .with_step_dt(1.0 / 30.0)
        .with_max_steps(20)
        .build_eframe(move |cc| App::with_device(cc, launch, None, DevicePreference::Cpu))
}

fn settle(h: &mut Harness<'_, App>) {
    let start = Instant::now();
    h.run_steps(2);
    while h.state().is_busy() {
        h.step();
        assert!(start.elapsed() < Duration::from_secs(240), "background work did not finish: {}", h.state().status());
        std::thread::sleep(Duration::from_millis(10));
    }
    h.run_steps(3);
}

fn click(h: &mut Harness<'_, App>, label: &str) {
    h.get_by_label(label).click();
    h.run_steps(2);
    settle(h);
}

#[test]
fn a_timeline_is_hung_compared_through_the_series_tracked_plotted_saved_and_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("patient");
    three_timepoints(&folder);

    // The folder opens as a timeline in date order, the latest two hung.
    let mut h = harness_for(Launch::Folder(folder.clone()));
    settle(&mut h);
    let t = h.state().timeline().expect("three studies open as a timeline");
    let dates: Vec<String> = t.points.iter().map(|p| p.date()).collect();
    assert_eq!(dates, ["2024-01-01", "2024-07-01", "2025-01-01"]);
    assert_eq!(t.points.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2"]);
    assert_eq!(t.points[0].description(), "CT chest 1");
    assert_eq!(t.points.iter().map(|p| (p.modality().to_string(), p.frames)).collect::<Vec<_>>(), vec![("CT".to_string(), 8); 3]);
    assert_eq!(t.hung, [1, 2]);
    assert_eq!(h.state().doc().images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2"]);
    h.get_by_label_contains("2024-01-01");

    // Hang the baseline as prior and the growth as current, from the strip.
    click(&mut h, "hang t0 as prior");
    click(&mut h, "hang t1 as current");
    assert_eq!(h.state().timeline().unwrap().hung, [0, 1]);
    let uid = |h: &Harness<'_, App>, r: Role| h.state().pane(r).series().unwrap().meta.series_uid.clone().unwrap();
    assert_eq!(uid(&h, Role::Prior), "1.2.826.0.17.0.2");
    assert_eq!(uid(&h, Role::Current), "1.2.826.0.17.1.2");
    assert_eq!((h.state().image_key(Role::Prior), h.state().image_key(Role::Current)), ("t0".into(), "t1".into()));
    assert!(h.state().pairing_issues().is_empty(), "{:?}", h.state().pairing_issues());

    // Whole-series Find changes: the lesion's growth is one finding over slices 3–5, on its
    // peak slice, with a box on every slice it spans.
    assert!(h.state().finds_whole_series());
    click(&mut h, "Find changes F");
    let doc = h.state().doc();
    assert!(!doc.findings.is_empty(), "nothing found: {}", h.state().status());
    let truth = BBox::from_centre(LESION.0, LESION.1, 18.0, 18.0);
    let lesion = doc
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Change)
        .find(|f| f.box_at("t1", 4).is_some_and(|b| b.rect().iou(&truth) > 0.3))
        .unwrap_or_else(|| {
            panic!("the lesion is not among {:#?}", doc.findings.iter().map(|f| (&f.boxes, f.slice_range())).collect::<Vec<_>>())
        })
        .clone();
    let ([first, last], peak) = lesion.slice_range().expect("a whole-series finding carries its slices");
    assert!(first <= 4 && last >= 4 && last - first <= 3, "{first}–{last}");
    assert!((first..=last).all(|s| lesion.box_at("t1", s).is_some()), "a box on every slice it spans");
    assert!(lesion.boxes.iter().all(|b| b.image == "t0" || b.image == "t1"));
    // The findings list groups by slice; N steps in that order and scrolls the panes there.
    h.get_by_label(&format!("Slice {}", peak + 1));
    h.state_mut().run(AppCommand::Select(None));
    let order: Vec<u32> =
        h.state().list_order().iter().filter_map(|&i| tandem::viewer::app::slice_on(&h.state().doc().findings[i], "t1")).collect();
    assert!(order.windows(2).all(|w| w[0] <= w[1]), "list in slice order: {order:?}");
    let mut visited = Vec::new();
    for _ in 0..h.state().doc().findings.len() {
        h.state_mut().run(AppCommand::Step { forward: true });
        let id = h.state().selected().unwrap().to_string();
        let f = h.state().doc().finding(&id).unwrap().clone();
        let shown = h.state().pane(Role::Current).frame as u32;
        assert_eq!(Some(shown), tandem::viewer::app::slice_on(&f, "t1"), "N scrolls the current pane to the finding's slice");
        visited.push(id);
    }
    assert!(visited.contains(&lesion.id));

    // Track the lesion: a new finding with a box on every timepoint, measured on each.
    h.state_mut().run(AppCommand::Reveal(lesion.id.clone()));
    h.run_steps(2);
    assert_eq!(h.state().pane(Role::Current).frame as u32, peak);
    click(&mut h, "Track");
    let tracked = h.state().selected().and_then(|id| h.state().doc().finding(id)).cloned().expect("the track is selected");
    assert_eq!(tracked.extra.get("tracked_from").and_then(|v| v.as_str()), Some(lesion.id.as_str()));
    let track = tracked.track.clone().expect("a track");
    assert_eq!(track.units, "mm");
    assert_eq!(track.measurements.iter().map(|m| m.image.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2"]);
    assert_eq!(track.measurements.iter().map(|m| m.frame).collect::<Vec<_>>(), [peak, peak, peak], "same level in each study");
    for m in &track.measurements {
        let b = BBox::from_array(m.bbox);
        assert!(b.iou(&BBox::from_centre(LESION.0, LESION.1, 16.0, 16.0)) > 0.2, "{}: {b:?}", m.image);
        // The lesion's outline is measured, and the box is the outline's: its diameter is the
        // box's longer side to within the pixel a chord gains across the diagonal.
        assert!((m.long_axis - 0.7 * b.width().max(b.height()) as f64).abs() < 0.7 * 1.5, "{m:?}");
    }
    assert_eq!(track.extra.get("axes").and_then(|v| v.as_str()), Some("outline diameters"));

    // The plot shows the three timepoints by days since baseline, with the changes.
    let plot = h.state().size_plot().expect("the selected track has a plot");
    assert_eq!(plot.x_axis, "days since baseline");
    assert_eq!(plot.points.iter().map(|p| p.x).collect::<Vec<_>>(), [0.0, 182.0, 366.0]);
    assert_eq!(plot.points.iter().map(|p| p.label.as_str()).collect::<Vec<_>>(), ["2024-01-01", "2024-07-01", "2025-01-01"]);
    let long: Vec<f64> = plot.points.iter().map(|p| p.long_axis).collect();
    // Baseline, growth, response: the sizes are the lesion's diameters (radius 6, 9, 7 px at
    // 0.7 mm), within a pixel and a half.
    for (k, r) in [6.0, 9.0, 7.0].into_iter().enumerate() {
        assert!((long[k] - 2.0 * r * 0.7).abs() < 1.05, "timepoint {k}: {long:?}");
    }
    assert!(long[1] > long[0] && long[2] < long[1], "{long:?}");
    assert_eq!(long, track.measurements.iter().map(|m| m.long_axis).collect::<Vec<_>>());
    let pct = |a: f64, b: f64| (100.0 * (a - b) / b * 10.0).round() / 10.0;
    assert_eq!(plot.points[0].change_from_baseline_pct, 0.0);
    assert_eq!(plot.points[0].change_from_nadir_pct, None);
    for k in 1..3 {
        assert_eq!(plot.points[k].change_from_baseline_pct, pct(long[k], long[0]));
        let nadir = long[..k].iter().copied().fold(f64::INFINITY, f64::min);
        assert_eq!(plot.points[k].change_from_nadir_pct, Some(pct(long[k], nadir)));
    }
    h.get_by_label_contains("Size over time");
    h.get_by_label("vs nadir");

    // Editing a tracked box measures it again.
    let before = track.measurements[1].long_axis;
    let b1 = tracked.box_at("t1", peak).unwrap().rect();
    let mut after = tracked.clone();
    after.boxes.iter_mut().filter(|b| b.image == "t1").for_each(|b| b.bbox = [b1.x1, b1.y1, b1.x2 + 4.0, b1.y2 + 4.0]);
    // (a box drag commits through the same path: `CommitDrag`, tested with the mouse in tests/ui.rs)
    let drag = tandem::viewer::app::Drag::Edit {
        finding: tracked.id.clone(),
        role: Role::Current,
        handle: tandem::viewer::overlay::Handle::SE,
        start: b1,
        grab: eframe::egui::Pos2::new(b1.x2, b1.y2),
        current: BBox::new(b1.x1, b1.y1, b1.x2 + 4.0, b1.y2 + 4.0),
    };
    h.state_mut().run(AppCommand::CommitDrag(drag));
    let edited = h.state().doc().finding(&tracked.id).unwrap().track.clone().unwrap();
    // The edited box is the reader's own measurement, by its sides; the others keep their outlines'.
    let side = 0.7 * (b1.width().max(b1.height()) + 4.0) as f64;
    assert!((edited.measurements[1].long_axis - side).abs() < 0.05, "{before} → {}", edited.measurements[1].long_axis);
    assert_eq!(edited.measurements[0].long_axis, track.measurements[0].long_axis);
    assert_eq!(edited.extra.get("axes").and_then(|v| v.as_str()), Some("outline diameters; edited boxes by their sides"));
    assert_eq!(h.state().size_plot().unwrap().points[1].long_axis, edited.measurements[1].long_axis);

    // Save beside the folder's studies, and open the folder again: the document comes back.
    h.state_mut().run(AppCommand::Save);
    assert!(!h.state().history().is_dirty(), "{}", h.state().status());
    let saved_path = h.state().default_doc_path().unwrap();
    assert!(saved_path.starts_with(&folder), "{}", saved_path.display());
    let saved = tandem::annotation::io::load(&saved_path).unwrap();
    assert_eq!(saved.schema_version, 2);
    let expected = h.state().doc().clone();
    drop(h);
    let mut h = harness_for(Launch::Folder(folder.clone()));
    settle(&mut h);
    assert!(h.state().prompt().is_none(), "{:?}", h.state().prompt());
    let reopened = h.state().doc();
    assert_eq!(reopened.findings, expected.findings);
    assert_eq!(reopened.images.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2"]);
    // Hanging the track's baseline shows its box there.
    h.state_mut().run(AppCommand::Timeline(tandem::viewer::app::TimelineCommand::Hang { role: Role::Prior, point: 0 }));
    settle(&mut h);
    h.state_mut().run(AppCommand::Reveal(tracked.id.clone()));
    h.run_steps(2);
    assert_eq!(h.state().pane(Role::Prior).frame as u32, track.measurements[0].frame);
    assert!(h.state().size_plot().is_some());
}

/// The grid of every timepoint scrolls them together by position: the baseline and the growth
/// share a frame of reference but cover other levels (8 and 10 slices), the response was placed in
/// another frame of reference 300 mm away (its levels found by comparing slices). A pane followed
/// by relative index would land on other slices than the ones asserted here.
#[test]
fn the_grid_shows_every_timepoint_and_scrolls_them_together_by_position() {
    use tandem::grounding::series::Matching;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("patient");
    write_levels(&folder.join("a"), 0, "20240101", 0..8, 0.0, "1.2.826.0.17.9", 6.0, false);
    write_levels(&folder.join("b"), 1, "20240701", 2..12, 0.0, "1.2.826.0.17.9", 9.0, false);
    write_levels(&folder.join("c"), 2, "20250101", 3..9, 300.0, "1.2.826.0.17.8", 7.0, false);
    let mut h = harness_for(Launch::Folder(folder));
    settle(&mut h);
    click(&mut h, "hang t0 as prior");
    click(&mut h, "hang t1 as current");
    let paired_frame = h.state().pane(Role::Current).frame;

    // Open the grid from the strip: one pane per timepoint, placed in the current's frame.
    click(&mut h, "Grid T");
    let grid = h.state().grid().expect("the grid is open");
    assert_eq!(grid.panes.iter().map(|p| p.point).collect::<Vec<_>>(), [0, 1, 2]);
    assert_eq!(grid.left_out, 0);
    assert_eq!(
        grid.panes.iter().map(|p| p.matching).collect::<Vec<_>>(),
        [Some(Matching::Position), Some(Matching::Position), Some(Matching::Rigid)]
    );
    assert!(grid.sync_text().contains("3D rigid registration"), "{}", grid.sync_text());
    // Level L is slice L of t0, L − 2 of t1 and L − 3 of t2.
    let levels = |h: &Harness<'_, App>| {
        let g = h.state().grid().unwrap();
        [g.panes[0].pane.frame, g.panes[1].pane.frame + 2, g.panes[2].pane.frame + 3]
    };
    // The grid opens at the current pane's slice (t1's 6th: level 7).
    assert_eq!(h.state().grid().unwrap().panes[1].pane.frame, paired_frame);
    assert_eq!(levels(&h), [7, 7, 7]);
    for key in ["t0", "t1", "t2"] {
        h.get_by_label(&format!("grid pane {key}"));
    }

    // Two slices up on the baseline (the pane under the pointer takes the keys): the others follow to level 5 (by index t1 would show its
    // slice 6, t2 its slice 4).
    let centre = |h: &Harness<'_, App>, i: usize| h.state().grid().unwrap().panes[i].pane.rect.center();
    h.hover_at(centre(&h, 0));
    h.run_steps(2);
    for _ in 0..2 {
        h.key_press(eframe::egui::Key::ArrowUp);
        h.run_steps(2);
    }
    assert_eq!(levels(&h), [5, 5, 5]);
    // One down on the registered study: level 6 everywhere.
    h.hover_at(centre(&h, 2));
    h.run_steps(2);
    h.key_press(eframe::egui::Key::ArrowDown);
    h.run_steps(2);
    assert_eq!(levels(&h), [6, 6, 6]);
    // Past t0's last level (7): t0 stays on its nearest slice while the others go on to level 8.
    for _ in 0..2 {
        h.key_press(eframe::egui::Key::ArrowDown);
        h.run_steps(2);
    }
    assert_eq!(levels(&h), [7, 8, 8]);

    // Cine plays the active pane (t2, under the pointer); the others follow level by level.
    h.state_mut().run(AppCommand::SetCine { playing: true, fps: 10.0 });
    h.run_steps(8);
    h.state_mut().run(AppCommand::SetCine { playing: false, fps: 10.0 });
    let played = levels(&h);
    assert_ne!(played[2], 8, "t2 played on from its last slice (wrapping to its first)");
    assert_eq!(played[1], played[2], "{played:?}");
    assert_eq!(played[0], played[2].clamp(0, 7), "{played:?}");
    // Leaving the grid shows the pair as it was hung; a grid opened again draws from GPU textures of
    // its own (the panes' generations are new).
    let generations: Vec<u64> = h.state().grid().unwrap().panes.iter().map(|p| p.pane.generation).collect();
    click(&mut h, "Back to prior | current");
    assert!(h.state().grid().is_none());
    click(&mut h, "Grid T");
    let again: Vec<u64> = h.state().grid().unwrap().panes.iter().map(|p| p.pane.generation).collect();
    assert!(again.iter().all(|g| !generations.contains(g)), "{generations:?} then {again:?}");
    click(&mut h, "Back to prior | current");
    assert_eq!(h.state().timeline().unwrap().hung, [0, 1]);
    assert_eq!(h.state().pane(Role::Current).frame, paired_frame);
    h.get_by_label("current pane");
}

/// A smooth synthetic chest in patient coordinates (mm) of a 192 mm field: a torso lying low in
/// the field (as on a table, so that the field's centre is off the body's), organs of different
/// densities small along the body's axis (every level looks different), and a faint texture.
fn chest(p: [f64; 3]) -> f32 {
    let blob = |c: [f64; 3], r: [f64; 3], v: f32| {
        let d = ((p[0] - c[0]) / r[0]).powi(2) + ((p[1] - c[1]) / r[1]).powi(2) + ((p[2] - c[2]) / r[2]).powi(2);
        v / (1.0 + ((d.sqrt() - 1.0) * 6.0).exp()) as f32
    };
    let organs = [
        ([70.0, 110.0, 12.0], [12.0, 10.0, 7.0], 300.0),
        ([120.0, 115.0, 20.0], [10.0, 14.0, 6.0], -400.0),
        ([95.0, 140.0, 30.0], [16.0, 8.0, 8.0], 250.0),
        ([75.0, 135.0, 42.0], [11.0, 11.0, 6.0], -300.0),
        ([125.0, 105.0, 38.0], [8.0, 12.0, 9.0], 350.0),
        ([90.0, 105.0, 50.0], [14.0, 9.0, 7.0], -250.0),
        ([60.0, 125.0, 28.0], [8.0, 15.0, 8.0], 200.0),
        ([130.0, 140.0, 8.0], [10.0, 10.0, 9.0], -350.0),
        ([105.0, 125.0, 58.0], [12.0, 12.0, 7.0], 300.0),
    ];
    let texture = 30.0 * ((p[0] / 6.0).sin() * (p[1] / 7.0).sin() * (p[2] / 5.0).sin()) as f32;
    -1000.0 + blob([96.0, 125.0, 30.0], [75.0, 45.0, 200.0], 1040.0) + organs.iter().map(|&(c, r, v)| blob(c, r, v)).sum::<f32>() + texture
}

/// The centre of pixel (63.5, 63.5) of the chest's slices at `z`: where a grid pane is followed.
fn chest_centre(z: f64) -> [f64; 3] {
    [1.5 * 63.5, 1.5 * 63.5, z]
}

/// `n` axial slices of the chest, 128² pixels of 1.5 mm, 2.5 mm apart from `z0`: slice point p
/// shows the chest at `body_from_slice(p)`.
fn write_chest(
    dir: &Path,
    study: usize,
    date: &str,
    frame_of_reference: &str,
    z0: f64,
    n: usize,
    body_from_slice: &dyn Fn([f64; 3]) -> [f64; 3],
) {
    std::fs::create_dir_all(dir).unwrap();
    for k in 0..n {
        let z = z0 + 2.5 * k as f64;
        let img = GrayImage::from_fn(128, 128, |x, y| chest(body_from_slice([1.5 * x as f64, 1.5 * y as f64, z])));
        write_image(dir, study, date, frame_of_reference, k, &img, 1.5, [0.0, 0.0, z]);
    }
}

/// A follow-up in another frame of reference, the patient turned 8° about left-right: the grid
/// registers it in 3D and, as the straight timepoint scrolls, shows its slice through the same
/// anatomy as the centre of the straight one's (and the other way round), with the distance from
/// that point to the shown slice in the header. The levels asserted are those the true transform
/// puts well inside a slice (0.6 mm of its plane), and on several of them a shift along the
/// normal (the earlier sync, computed here by `match_slices`) shows another slice.
#[test]
fn a_timepoint_turned_in_another_frame_of_reference_follows_through_the_3d_registration() {
    use tandem::grounding::series::{Matching, match_slices};
    use tandem::registration::rigid3d::Rigid;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("patient");
    write_chest(&folder.join("a"), 0, "20240101", "1.2.826.0.17.9", 0.0, 24, &|p| p);
    write_chest(&folder.join("b"), 1, "20240701", "1.2.826.0.17.9", 0.0, 24, &|p| p);
    // The latest: another table position (200 mm on), the patient turned 8° and moved a little.
    let truth = Rigid { angles_deg: [8.0, 0.0, 0.0], translation_mm: [2.0, -3.0, -199.0], centre_mm: [96.0, 125.0, 230.0] };
    write_chest(&folder.join("c"), 2, "20250101", "1.2.826.0.17.8", 200.0, 24, &|p| truth.apply(p));
    let mut h = harness_for(Launch::Folder(folder));
    settle(&mut h);
    click(&mut h, "hang t0 as prior");
    click(&mut h, "hang t1 as current");
    click(&mut h, "Grid T");
    let grid = h.state().grid().expect("the grid is open");
    assert_eq!(
        grid.panes.iter().map(|p| p.matching).collect::<Vec<_>>(),
        [Some(Matching::Position), Some(Matching::Position), Some(Matching::Rigid)],
        "{}",
        grid.sync_text()
    );
    assert!(grid.sync_text().contains("3D rigid registration"), "{}", grid.sync_text());
    let series = |h: &Harness<'_, App>, i: usize| h.state().grid().unwrap().panes[i].pane.series().unwrap().clone();
    // The earlier sync: t2's positions less the shift `match_slices` finds by comparing slices.
    let shift = match_slices(&series(&h, 2), &series(&h, 1)).unwrap().shift_mm.unwrap();
    let by_shift =
        |z: f64| (0..24).min_by(|&a, &b| (200.0 + 2.5 * a as f64 - shift - z).abs().total_cmp(&(200.0 + 2.5 * b as f64 - shift - z).abs()));
    let frames = |h: &Harness<'_, App>| h.state().grid().unwrap().panes.iter().map(|p| p.pane.frame).collect::<Vec<_>>();
    let hover = |h: &mut Harness<'_, App>, i: usize| {
        let at = h.state().grid().unwrap().panes[i].pane.rect.center();
        h.hover_at(at);
        h.run_steps(2);
    };
    let key = |h: &mut Harness<'_, App>, k: eframe::egui::Key| {
        h.key_press(k);
        h.run_steps(2);
    };

    // Scrolling the straight t1 from its first slice to its last.
    hover(&mut h, 1);
    for _ in 0..24 {
        key(&mut h, eframe::egui::Key::ArrowUp);
    }
    let (mut asserted, mut differ) = (0, 0);
    for s in 0..24 {
        let f = frames(&h);
        assert_eq!((f[0], f[1]), (s, s), "t0 shares t1's frame of reference and positions");
        // The slice of t2 through t1's slice centre, by the true transform taken back.
        let q = truth.apply_inverse(chest_centre(2.5 * s as f64));
        let k = ((q[2] - 200.0) / 2.5).round();
        let off = 200.0 + 2.5 * k - q[2];
        if (0.0..=23.0).contains(&k) && off.abs() <= 0.6 {
            assert_eq!(f[2], k as usize, "t1 slice {s}: t2 shows slice {} where the anatomy is on {k}", f[2]);
            let shown = h.state().grid().unwrap().offset_mm(2, 1).unwrap();
            assert!((shown - off).abs() < 1.0, "t1 slice {s}: {shown:.2} mm off in the header, truly {off:.2}");
            asserted += 1;
            differ += usize::from(by_shift(2.5 * s as f64) != Some(k as usize));
        }
        key(&mut h, eframe::egui::Key::ArrowDown);
    }
    assert!(asserted >= 6, "{asserted} levels asserted");
    assert!(differ >= 3, "the shift along the normal shows the same slices on all but {differ} of {asserted} levels");

    // Scrolling the turned t2: t1 (and t0) show the slice through its slice centre.
    hover(&mut h, 2);
    for _ in 0..24 {
        key(&mut h, eframe::egui::Key::ArrowUp);
    }
    let mut asserted = 0;
    for k in 0..24 {
        let f = frames(&h);
        assert_eq!(f[2], k);
        let q = truth.apply(chest_centre(200.0 + 2.5 * k as f64));
        let s = (q[2] / 2.5).round();
        let off = 2.5 * s - q[2];
        if (0.0..=23.0).contains(&s) && off.abs() <= 0.6 {
            assert_eq!((f[0], f[1]), (s as usize, s as usize), "t2 slice {k}");
            let shown = h.state().grid().unwrap().offset_mm(1, 2).unwrap();
            assert!((shown - off).abs() < 1.0, "t2 slice {k}: {shown:.2} mm off in the header, truly {off:.2}");
            asserted += 1;
        }
        key(&mut h, eframe::egui::Key::ArrowDown);
    }
    assert!(asserted >= 6, "{asserted} levels asserted");
}

/// A timepoint in another frame of reference too thin for a 3D registration (two slices): the
/// grid says why and places it by the shift along the normal found by comparing slices.
#[test]
fn a_timepoint_too_thin_to_register_in_3d_follows_by_the_shift_and_the_bar_says_why() {
    use tandem::grounding::series::Matching;
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("patient");
    write_chest(&folder.join("a"), 0, "20240101", "1.2.826.0.17.9", 0.0, 24, &|p| p);
    write_chest(&folder.join("b"), 1, "20240701", "1.2.826.0.17.9", 0.0, 24, &|p| p);
    // Levels 10 and 11 of the chest, 300 mm on in another frame.
    write_chest(&folder.join("c"), 2, "20250101", "1.2.826.0.17.8", 325.0, 2, &|p| [p[0], p[1], p[2] - 300.0]);
    let mut h = harness_for(Launch::Folder(folder));
    settle(&mut h);
    click(&mut h, "hang t0 as prior");
    click(&mut h, "hang t1 as current");
    click(&mut h, "Grid T");
    let grid = h.state().grid().unwrap();
    assert_eq!(
        grid.panes.iter().map(|p| p.matching).collect::<Vec<_>>(),
        [Some(Matching::Position), Some(Matching::Position), Some(Matching::RegisteredPosition)]
    );
    let text = grid.sync_text();
    assert!(text.contains("registered shift") && text.contains("3D registration refused: the other series is too thin"), "{text}");
    // Its two slices lie at levels 10 and 11.
    h.hover_at(grid.panes[1].pane.rect.center());
    h.run_steps(2);
    for _ in 0..24 {
        h.key_press(eframe::egui::Key::ArrowUp);
        h.run_steps(2);
    }
    for _ in 0..11 {
        h.key_press(eframe::egui::Key::ArrowDown);
        h.run_steps(2);
    }
    assert_eq!(h.state().grid().unwrap().panes.iter().map(|p| p.pane.frame).collect::<Vec<_>>(), [11, 11, 1]);
    h.key_press(eframe::egui::Key::ArrowUp);
    h.run_steps(2);
    assert_eq!(h.state().grid().unwrap().panes.iter().map(|p| p.pane.frame).collect::<Vec<_>>(), [10, 10, 0]);
}

/// A lesion tracked from a 0.7 mm study onto one of 1.4 mm pixels (half the matrix): the coarse
/// study is followed on the fine grid (resampled by pixel spacing) and its box lands on the lesion
/// in its own pixels, measured in its own millimetres.
#[test]
fn a_finding_is_tracked_onto_a_study_of_coarser_pixels() {
    use tandem::annotation::{Command, Finding, ImageBox, Source};
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("patient");
    write_levels(&folder.join("a"), 0, "20240101", 0..8, 0.0, "1.2.826.0.17.9", 6.0, false);
    write_levels(&folder.join("b"), 1, "20240701", 0..8, 0.0, "1.2.826.0.17.9", 9.0, false);
    write_levels(&folder.join("c"), 2, "20250101", 0..8, 0.0, "1.2.826.0.17.9", 7.0, true);
    let mut h = harness_for(Launch::Folder(folder));
    settle(&mut h);
    assert_eq!(h.state().timeline().unwrap().hung, [1, 2]);
    assert_eq!(h.state().pane(Role::Current).current_frame().unwrap().width, 64);
    // The lesion boxed on t1's level 4 (the prior pane shows it).
    assert_eq!(h.state().pane(Role::Prior).frame, 4);
    let lesion = Finding::new(
        FindingKind::Manual,
        "lesion",
        vec![ImageBox::new("t1", 4, BBox::from_centre(LESION.0, LESION.1, 20.0, 20.0))],
        Source::Human { user: None },
        &tandem::annotation::document::now(),
    );
    let id = lesion.id.clone();
    h.state_mut().run(AppCommand::Edit(Box::new(Command::Add { findings: vec![lesion], description: "lesion".into() })));
    h.state_mut().run(AppCommand::Select(Some(id)));
    h.run_steps(2);
    click(&mut h, "Track");
    let tracked = h.state().selected().and_then(|id| h.state().doc().finding(id)).cloned().expect("tracked, not refused");
    let track = tracked.track.clone().unwrap_or_else(|| panic!("no track: {}", h.state().status()));
    assert_eq!(track.measurements.iter().map(|m| m.image.as_str()).collect::<Vec<_>>(), ["t0", "t1", "t2"]);
    let on_t2 = tracked.box_at("t2", 4).expect("a box on t2's level 4").rect();
    let (cx, cy) = on_t2.centre();
    assert!((cx - LESION.0 / 2.0).abs() < 3.0 && (cy - LESION.1 / 2.0).abs() < 3.0, "{on_t2:?} on the 64² study");
    assert!(on_t2.x2 <= 64.0 && on_t2.y2 <= 64.0);
    // Measured in t2's own 1.4 mm pixels, and of a size like the fine studies' (within a third).
    let m2 = &track.measurements[2];
    assert!((m2.long_axis - 1.4 * on_t2.width().max(on_t2.height()) as f64).abs() < 1.4 * 1.5, "{m2:?}");
    let m1 = &track.measurements[1];
    assert!((m2.long_axis / m1.long_axis - 1.0).abs() < 1.0 / 3.0, "{} mm vs {} mm", m2.long_axis, m1.long_axis);
}

#[test]
fn a_folder_of_two_studies_still_hangs_as_a_pair() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("pair");
    write_study(&folder.join("x"), 0, "20240101", 3, 0.0);
    write_study(&folder.join("y"), 1, "20250101", 3, 6.0);
    let mut h = harness_for(Launch::Folder(folder));
    settle(&mut h);
    assert!(h.state().timeline().is_none());
    assert_eq!(h.state().image_key(Role::Prior), "prior");
    let date = |r: Role| h.state().pane(r).series().unwrap().meta.study_date.clone().unwrap();
    assert_eq!((date(Role::Prior), date(Role::Current)), ("20240101".into(), "20250101".into()));
}

/// Concept code value → values of the content items with that concept (UIDREF UIDs, NUM values).
fn content_values(obj: &dicom_object::InMemDicomObject, concept: &str, out: &mut Vec<String>) {
    for e in obj.iter() {
        let Some(items) = e.items() else { continue };
        for it in items {
            let name = it
                .get(tags::CONCEPT_NAME_CODE_SEQUENCE)
                .and_then(|c| c.items())
                .and_then(|c| c.first())
                .and_then(|c| c.get(tags::CODE_VALUE))
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_string());
            if name.as_deref() == Some(concept) {
                if let Some(uid) = it.get(tags::UID) {
                    out.push(uid.to_str().unwrap().trim_end_matches('\0').to_string());
                }
                let numeric = it.get(tags::MEASURED_VALUE_SEQUENCE).and_then(|m| m.items()).and_then(|m| m.first());
                if let Some(v) = numeric.and_then(|m| m.get(tags::NUMERIC_VALUE)) {
                    out.push(v.to_str().unwrap().trim().to_string());
                }
            }
            content_values(it, concept, out);
        }
    }
}

/// A tracked finding through three CT timepoints (and a whole-series change) in every export:
/// COCO has one image entry per slice and links the track's boxes; MedSG has one object-tracking
/// item per step and one difference item per slice pair of the change; the SR has the track's
/// sizes and one tracking UID, the same in every export, and dciodvfy finds no error in it.
#[test]
fn a_track_exports_as_coco_frames_medsg_tracking_and_sr_measurement_groups() {
    use tandem::annotation::document::Track;
    use tandem::annotation::export::{self, ExportFormat};
    use tandem::annotation::{Document, Finding, ImageBox, ImageRef, Source};
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("patient");
    three_timepoints(&folder);
    let quiet = |_: f32, _: &str| {};
    let images: Vec<ImageRef> = ["c-2024-01", "b-2024-07", "a-2025-01"]
        .iter()
        .enumerate()
        .map(|(k, d)| ImageRef::from_series(&format!("t{k}"), &tandem::study::load(&folder.join(d), &quiet).unwrap()))
        .collect();
    let mut doc = Document::new(images);
    let now = tandem::annotation::document::now();
    let boxes: Vec<(String, u32, [f32; 4])> = [[90.0, 82.0, 102.0, 94.0], [87.0, 79.0, 105.0, 97.0], [89.0, 81.0, 103.0, 95.0]]
        .iter()
        .enumerate()
        .map(|(k, b)| (format!("t{k}"), 4, *b))
        .collect();
    let mut tracked = Finding::new(
        FindingKind::Correspondence,
        "lesion",
        boxes.iter().map(|(i, f, b)| ImageBox::new(i, *f, BBox::from_array(*b))).collect(),
        Source::Model { id: "tandem-grounder".into(), version: "0.1.0".into(), score: 0.8 },
        &now,
    );
    tracked.track = Some(Track::measure(&boxes, &[Some([0.7, 0.7]); 3]));
    let change = Finding::new(
        FindingKind::Change,
        "change",
        vec![
            ImageBox::new("t0", 3, BBox::new(88.0, 80.0, 104.0, 96.0)),
            ImageBox::new("t1", 3, BBox::new(88.0, 80.0, 104.0, 96.0)),
            ImageBox::new("t0", 4, BBox::new(86.0, 78.0, 106.0, 98.0)),
            ImageBox::new("t1", 4, BBox::new(86.0, 78.0, 106.0, 98.0)),
        ],
        Source::Model { id: "tandem-grounder".into(), version: "0.1.0".into(), score: 0.9 },
        &now,
    );
    doc.findings = vec![tracked.clone(), change];
    doc.schema_version = doc.required_version();
    assert!(export::problems(&doc, None).is_empty(), "{:?}", export::problems(&doc, None));

    // COCO: 3 × 8 slices, each box on its own slice's entry, the track's boxes linked.
    let coco = export::coco::to_coco(&doc, false);
    let entries = coco["images"].as_array().unwrap();
    assert_eq!(entries.len(), 24);
    let names: std::collections::BTreeSet<&str> = entries.iter().map(|e| e["file_name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), 24, "every slice has a name of its own");
    let uids: std::collections::BTreeSet<&str> = entries.iter().map(|e| e["sop_instance_uid"].as_str().unwrap()).collect();
    assert_eq!(uids.len(), 24, "every slice names its own instance");
    let anns = coco["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 7);
    for a in anns {
        let entry = &entries[a["image_id"].as_u64().unwrap() as usize - 1];
        assert_eq!(entry["frame"], a["frame"]);
    }
    let track_anns: Vec<&serde_json::Value> = anns.iter().filter(|a| a["attributes"]["finding_id"] == tracked.id.as_str()).collect();
    assert!(track_anns.iter().all(|a| a["track_id"] == 1));
    assert_eq!(
        track_anns
            .iter()
            .map(|a| entries[a["image_id"].as_u64().unwrap() as usize - 1]["tandem_image"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["t0", "t1", "t2"]
    );
    assert_eq!(track_anns[1]["attributes"]["timepoint"], 1);
    assert_eq!(track_anns[1]["attributes"]["long_axis"], 12.6);
    assert!(anns.iter().filter(|a| a["attributes"]["kind"] == "change").all(|a| a.get("track_id").is_none()));

    // MedSG: the track's two steps as object tracking, named as COCO names those slices.
    let medsg = export::medsg::to_medsg(&doc, false);
    let steps: Vec<&serde_json::Value> = medsg.as_array().unwrap().iter().filter(|i| i["track"] == tracked.id.as_str()).collect();
    assert_eq!(steps.len(), 2);
    for (k, item) in steps.iter().enumerate() {
        assert_eq!(item["task"], "object_tracking");
        let want = |t: usize| {
            entries.iter().find(|e| e["tandem_image"] == format!("t{t}").as_str() && e["frame"] == 4).unwrap()["file_name"].clone()
        };
        assert_eq!(item["images"], serde_json::json!([want(k), want(k + 1)]));
        let b = boxes[k + 1].2;
        assert_eq!(item["answer"], serde_json::json!([b[0] as i64, b[1] as i64, b[2] as i64, b[3] as i64]));
    }

    // MedSG: the whole-series change on timepoint keys, one difference item per slice pair, each
    // naming its own slices (earlier timepoint first) as COCO does.
    let diffs: Vec<&serde_json::Value> =
        medsg.as_array().unwrap().iter().filter(|i| i["task"].as_str().is_some_and(|t| t.ends_with("_Diff"))).collect();
    assert_eq!(diffs.len(), 2, "{medsg:#}");
    for (item, slice, b) in [(diffs[0], 3, [88, 80, 104, 96]), (diffs[1], 4, [86, 78, 106, 98])] {
        let name = |t: &str| entries.iter().find(|e| e["tandem_image"] == t && e["frame"] == slice).unwrap()["file_name"].clone();
        assert_eq!(item["images"], serde_json::json!([name("t0"), name("t1")]));
        assert_eq!(item["task"], "Registered_Diff", "same box on both: registered");
        assert_eq!(item["answer"], serde_json::json!(b));
        assert_eq!(item["frame"], slice);
    }
    assert_ne!(diffs[0]["id"], diffs[1]["id"]);

    // SR: one tracking UID for the track's three groups, the same in a second export; its sizes.
    let read = |p: &Path| dicom_object::open_file(p).unwrap().into_inner();
    let (a, b) = (dir.path().join("a.dcm"), dir.path().join("b.dcm"));
    export::export(&doc, ExportFormat::Sr, &a, false).unwrap();
    export::export(&doc, ExportFormat::Sr, &b, false).unwrap();
    let (sr_a, sr_b) = (read(&a), read(&b));
    let (mut ua, mut ub) = (Vec::new(), Vec::new());
    content_values(&sr_a, "112040", &mut ua);
    content_values(&sr_b, "112040", &mut ub);
    assert_eq!(ua, ub, "tracking UIDs are stable across exports");
    assert_eq!(ua.len(), 3 + 4, "a measurement group per box");
    assert!(ua[..3].iter().all(|u| *u == ua[0]) && ua[3..].iter().all(|u| *u == ua[3]) && ua[0] != ua[3], "{ua:?}");
    let mut long = Vec::new();
    content_values(&sr_a, "103339001", &mut long);
    // Decimal strings as short as their value needs (the DS writer shared with measurements).
    let long: Vec<f64> = long.iter().map(|v| v.trim().parse().unwrap()).collect();
    assert_eq!(long, [8.4, 12.6, 9.8]);
    let mut area = Vec::new();
    content_values(&sr_a, "42798000", &mut area);
    assert_eq!(area.len(), 3);
    // The report joins the latest study; every box points at its own slice's instance.
    assert_eq!(sr_a.get(tags::STUDY_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0'), "1.2.826.0.17.2");
    let referenced: Vec<String> = tandem::annotation::export::sr::read_boxes(&sr_a).into_iter().map(|(uid, _, _)| uid).collect();
    assert_eq!(&referenced[..3], ["1.2.826.0.17.0.2.5", "1.2.826.0.17.1.2.5", "1.2.826.0.17.2.2.5"]);
    if std::process::Command::new("dciodvfy").arg("-help").output().is_err() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "SKIPPED: dciodvfy (dicom3tools) not installed: SR validation skipped (.ci/run installs it)");
        return;
    }
    let out = std::process::Command::new("dciodvfy").arg(&a).output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(errors.is_empty(), "dciodvfy errors:\n{report}");
    assert!(report.contains("ComprehensiveSR"), "{report}");
}
