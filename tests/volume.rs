//! NIfTI and MetaImage volumes open as series: shape, values (NIfTI scaling), spacing and
//! positions in DICOM's LPS, and headers that lie about their size refused with an error.
//! The files are written here, byte by byte; one small real MetaImage is in tests/data/volume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tandem::study::{Samples, Series, StudyError, volume};

fn quiet(_: f32, _: &str) {}

fn load(path: &Path) -> Result<Series, StudyError> {
    tandem::study::load(path, &quiet)
}

fn gray(series: &Series, frame: usize) -> Vec<f32> {
    match &*series.frames[frame].samples().unwrap() {
        Samples::Gray(v) => v.clone(),
        Samples::Rgb(_) => panic!("grey expected"),
    }
}

fn close(a: [f64; 3], b: [f64; 3]) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}

fn tandem_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tandem")).args(args).env("TANDEM_DEVICE", "cpu").output().expect("run tandem")
}

/// What goes in a NIfTI-1 header; the rest is zero.
struct Nifti {
    dim: Vec<u16>,
    datatype: i16,
    bitpix: i16,
    pixdim: [f32; 8],
    slope: f32,
    inter: f32,
    qform: Option<([f32; 3], [f32; 3])>,
    sform: Option<[[f32; 4]; 3]>,
}

impl Nifti {
    fn new(dim: &[u16], datatype: i16, bitpix: i16) -> Nifti {
        Nifti { dim: dim.to_vec(), datatype, bitpix, pixdim: [1.0; 8], slope: 0.0, inter: 0.0, qform: None, sform: None }
    }

    /// A single-file .nii: header, an empty extension block, the voxels.
    fn bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut h = vec![0u8; 352];
        let put = |h: &mut Vec<u8>, at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
        put(&mut h, 0, &348i32.to_le_bytes());
        put(&mut h, 40, &(self.dim.len() as i16).to_le_bytes());
        for (i, d) in self.dim.iter().enumerate() {
            put(&mut h, 42 + 2 * i, &d.to_le_bytes());
        }
        put(&mut h, 70, &self.datatype.to_le_bytes());
        put(&mut h, 72, &self.bitpix.to_le_bytes());
        for (i, p) in self.pixdim.iter().enumerate() {
            put(&mut h, 76 + 4 * i, &p.to_le_bytes());
        }
        put(&mut h, 108, &352f32.to_le_bytes());
        put(&mut h, 112, &self.slope.to_le_bytes());
        put(&mut h, 116, &self.inter.to_le_bytes());
        put(&mut h, 148, b"written by tests/volume.rs");
        if let Some((bcd, offset)) = self.qform {
            put(&mut h, 252, &1i16.to_le_bytes());
            for (i, v) in bcd.iter().chain(&offset).enumerate() {
                put(&mut h, 256 + 4 * i, &v.to_le_bytes());
            }
        }
        if let Some(rows) = self.sform {
            put(&mut h, 254, &1i16.to_le_bytes());
            for (r, row) in rows.iter().enumerate() {
                for (c, v) in row.iter().enumerate() {
                    put(&mut h, 280 + 16 * r + 4 * c, &v.to_le_bytes());
                }
            }
        }
        put(&mut h, 344, b"n+1\0");
        h.extend_from_slice(data);
        h
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Voxel (i, j, k) of the 4×3×2 test volume holds i + 10 j + 100 k.
fn ramp_i16() -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..2i16 {
        for j in 0..3i16 {
            for i in 0..4i16 {
                out.extend_from_slice(&(i + 10 * j + 100 * k).to_le_bytes());
            }
        }
    }
    out
}

#[test]
fn nii_shape_scaling_spacing_and_positions() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Nifti::new(&[4, 3, 2], 4, 16);
    n.slope = 2.0;
    n.inter = -10.0;
    // RAS: i → right 0.5 mm, j → anterior 0.7 mm, k → superior 2 mm.
    n.sform = Some([[0.5, 0.0, 0.0, 10.0], [0.0, 0.7, 0.0, 20.0], [0.0, 0.0, 2.0, 30.0]]);
    let path = write(dir.path(), "ramp.nii", &n.bytes(&ramp_i16()));
    let s = load(&path).unwrap();
    assert_eq!(s.frames.len(), 2);
    assert_eq!((s.frames[0].width, s.frames[0].height), (4, 3));
    // Shown as DICOM shows an axial slice: columns toward the left (−i), rows toward posterior (−j).
    let stored = |i: usize, j: usize, k: usize| (i + 10 * j + 100 * k) as f32 * 2.0 - 10.0;
    assert_eq!(gray(&s, 0)[0], stored(3, 2, 0));
    assert_eq!(gray(&s, 0)[4 * 2 + 3], stored(0, 0, 0));
    assert_eq!(gray(&s, 1)[1], stored(2, 2, 1));
    let m = &s.frames[0].meta;
    assert_eq!(m.image_orientation, Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]));
    let spacing = m.pixel_spacing_mm.unwrap();
    assert!((spacing[0] - 0.7).abs() < 1e-6 && (spacing[1] - 0.5).abs() < 1e-6, "{spacing:?}");
    assert_eq!(m.series_description.as_deref(), Some("written by tests/volume.rs"));
    // RAS (10 + 3 × 0.5, 20 + 2 × 0.7, 30) in LPS.
    assert!(close(s.frames[0].image_position.unwrap(), [-11.5, -21.4, 30.0]), "{:?}", s.frames[0].image_position);
    assert_eq!(s.frames.iter().map(|f| f.slice_position.unwrap()).collect::<Vec<_>>(), vec![30.0, 32.0]);
    let w = s.frames[0].default_window;
    assert!(w.lower() < 0.0 && w.upper() > 200.0, "{w:?}");

    let out = tandem_cli(&["info", path.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["format"].as_str(), v["rows"].as_u64(), v["cols"].as_u64(), v["frames"].as_u64()),
        (Some("nifti"), Some(3), Some(4), Some(2))
    );
    assert_eq!(v["pixels"]["shape"], serde_json::json!([2, 3, 4]));
    assert_eq!(v["pixels"]["dtype"], "int16");
    assert_eq!((v["pixels"]["min"].as_f64(), v["pixels"]["max"].as_f64()), (Some(0.0), Some(123.0)));
    assert_eq!((v["bits_allocated"].as_u64(), v["pixel_representation"].as_u64()), (Some(16), Some(1)));
}

#[test]
fn nii_gz_with_a_qform_and_float_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = Nifti::new(&[4, 3, 2], 16, 32);
    n.pixdim = [1.0, 0.5, 0.7, 2.0, 0.0, 0.0, 0.0, 0.0];
    n.qform = Some(([0.0, 0.0, 0.0], [10.0, 20.0, 30.0]));
    let values: Vec<f32> = (0..24).map(|v| v as f32 * 0.25 - 1.0).collect();
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let path = write(dir.path(), "ramp.nii.gz", &gzip(&n.bytes(&data)));
    let s = load(&path).unwrap();
    assert_eq!((s.frames.len(), s.frames[0].width, s.frames[0].height), (2, 4, 3));
    // Same display turn as the sform case: (r, c) = (0, 0) is voxel (3, 2, k).
    assert_eq!(gray(&s, 0)[0], values[3 + 4 * 2]);
    assert_eq!(gray(&s, 1)[11], values[12]);
    assert!(close(s.frames[1].image_position.unwrap(), [-11.5, -21.4, 32.0]), "{:?}", s.frames[1].image_position);
    let v = volume::read(&path).unwrap();
    assert_eq!((v.format, v.dims, v.voxels.dtype()), (volume::VolumeFormat::Nifti, [4, 3, 2], "float32"));
}

#[test]
fn four_d_shows_the_first_volume_and_2d_is_one_frame() {
    let dir = tempfile::tempdir().unwrap();
    // 2×2×1×3: three time points, each slice filled with its index.
    let data: Vec<u8> = (0..3u8).flat_map(|t| [t; 4]).collect();
    let path = write(dir.path(), "fmri.nii", &Nifti::new(&[2, 2, 1, 3], 2, 8).bytes(&data));
    let s = load(&path).unwrap();
    assert_eq!(s.frames.len(), 1);
    assert_eq!(gray(&s, 0), &[0.0; 4]);
    assert_eq!(volume::read(&path).unwrap().volumes, 3);

    // 2D without a transform: shown as stored, spacing from pixdim, no position.
    let mut n = Nifti::new(&[3, 2], 512, 16);
    n.pixdim = [1.0, 0.8, 0.9, 1.0, 0.0, 0.0, 0.0, 0.0];
    let data: Vec<u8> = (0..6u16).flat_map(|v| (v * 1000).to_le_bytes()).collect();
    let path = write(dir.path(), "plane.nii", &n.bytes(&data));
    let s = load(&path).unwrap();
    assert_eq!((s.frames.len(), s.frames[0].width, s.frames[0].height), (1, 3, 2));
    assert_eq!(gray(&s, 0), &[0.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0]);
    assert_eq!(s.frames[0].image_position, None);
    let spacing = s.meta.pixel_spacing_mm.unwrap();
    assert!((spacing[0] - 0.9).abs() < 1e-6 && (spacing[1] - 0.8).abs() < 1e-6, "{spacing:?}");
}

#[test]
fn headers_that_lie_about_their_size_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Far past the memory cap, with 8 bytes of voxels.
    let huge = Nifti::new(&[30000, 30000, 30000], 4, 16).bytes(&[0; 8]);
    let err = load(&write(dir.path(), "huge.nii", &huge)).unwrap_err().to_string();
    assert!(err.contains("TANDEM_MAX_IMAGE_MB"), "{err}");
    // Under the cap, but the file is far too short.
    let short = Nifti::new(&[1000, 1000, 10], 4, 16).bytes(&[0; 8]);
    let err = load(&write(dir.path(), "short.nii", &short)).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    // Gzip too small to inflate to what the header declares.
    let err = load(&write(dir.path(), "short.nii.gz", &gzip(&short))).unwrap_err().to_string();
    assert!(err.contains("cannot inflate"), "{err}");
    // A negative dimension (stored as i16).
    let negative = Nifti::new(&[4, 0xFFFF, 2], 4, 16).bytes(&[0; 8]);
    assert!(load(&write(dir.path(), "negative.nii", &negative)).unwrap_err().to_string().contains("-1"));
    // MetaImage: a data file far smaller than DimSize says.
    let raw = write(dir.path(), "small.raw", &[0; 16]);
    let mhd = format!(
        "ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_SHORT\nElementDataFile = {}\n",
        raw.file_name().unwrap().to_str().unwrap()
    );
    let err = load(&write(dir.path(), "huge.mhd", mhd.as_bytes())).unwrap_err().to_string();
    assert!(err.contains("TANDEM_MAX_IMAGE_MB"), "{err}");
    let mhd = "ObjectType = Image\nNDims = 3\nDimSize = 512 512 40\nElementType = MET_SHORT\nElementDataFile = small.raw\n";
    let err = load(&write(dir.path(), "short.mhd", mhd.as_bytes())).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    // The command line says so in one line and exits 2.
    let out = tandem_cli(&["info", dir.path().join("huge.nii").to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim().lines().count(), 1);
}

#[test]
fn truncated_or_overlong_gzip_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let n = Nifti::new(&[64, 64, 8], 4, 16);
    let data: Vec<u8> = (0..64 * 64 * 8).flat_map(|v: i32| ((v * 7919 % 4001) as i16).to_le_bytes()).collect();
    let whole = gzip(&n.bytes(&data));
    assert!(load(&write(dir.path(), "whole.nii.gz", &whole)).is_ok());
    let err = load(&write(dir.path(), "cut.nii.gz", &whole[..whole.len() * 2 / 3])).unwrap_err().to_string();
    assert!(err.contains("damaged") || err.contains("truncated") || err.contains("cannot be read"), "{err}");
    // More voxels in the stream than the header declares: the header does not describe the data.
    let mut longer = n.bytes(&data);
    longer.extend_from_slice(&[0; 100]);
    let err = load(&write(dir.path(), "long.nii.gz", &gzip(&longer))).unwrap_err().to_string();
    assert!(err.contains("does not describe"), "{err}");
    // Not gzip and not NIfTI.
    assert!(load(&write(dir.path(), "text.nii", b"hello")).is_err());
}

/// 3×2×2 unsigned 16-bit voxels v = 1 + i + 3 j + 6 k, big-endian.
fn ramp_u16_be() -> Vec<u8> {
    (0..12u16).flat_map(|v| (v + 1).to_be_bytes()).collect()
}

#[test]
fn mha_with_local_data_coronal() {
    let dir = tempfile::tempdir().unwrap();
    // i → left, j → feet, k → posterior: a coronal stack, shown as stored.
    let header = "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = True\nCompressedData = False\nTransformMatrix = 1 0 0 0 0 -1 0 1 0\nOffset = -5 6 70\nElementSpacing = 0.5 0.6 3\nDimSize = 3 2 2\nModality = MET_MOD_CT\nElementType = MET_USHORT\nElementDataFile = LOCAL\n";
    let mut bytes = header.as_bytes().to_vec();
    bytes.extend(ramp_u16_be());
    let path = write(dir.path(), "coronal.mha", &bytes);
    let s = load(&path).unwrap();
    assert_eq!((s.frames.len(), s.frames[0].width, s.frames[0].height), (2, 3, 2));
    assert_eq!(gray(&s, 0), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(gray(&s, 1), &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    assert_eq!(s.meta.modality.as_deref(), Some("CT"));
    assert_eq!(s.meta.image_orientation, Some([1.0, 0.0, 0.0, 0.0, 0.0, -1.0]));
    assert_eq!(s.meta.pixel_spacing_mm, Some([0.6, 0.5]));
    assert!(close(s.frames[1].image_position.unwrap(), [-5.0, 9.0, 70.0]), "{:?}", s.frames[1].image_position);
    assert_eq!(s.frames.iter().map(|f| f.slice_position.unwrap()).collect::<Vec<_>>(), vec![6.0, 9.0]);

    let out = tandem_cli(&["info", path.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["format"].as_str(), v["modality"].as_str()), (Some("metaimage"), Some("CT")));
    assert_eq!(v["pixels"]["shape"], serde_json::json!([2, 2, 3]));
    assert_eq!(v["pixels"]["dtype"], "uint16");
}

#[test]
fn mhd_with_raw_and_a_flipped_axis() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f32> = (0..6).map(|v| v as f32 - 2.5).collect();
    write(dir.path(), "plane.raw", &values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    // i points to the patient's right: shown mirrored so that the screen's right is the left.
    let header = "ObjectType = Image\nNDims = 2\nDimSize = 3 2\nElementSpacing = 0.25 0.5\nTransformMatrix = -1 0 0 1\nOffset = 0 0\nElementType = MET_FLOAT\nElementDataFile = plane.raw\n";
    let s = load(&write(dir.path(), "plane.mhd", header.as_bytes())).unwrap();
    assert_eq!((s.frames.len(), s.frames[0].width, s.frames[0].height), (1, 3, 2));
    assert_eq!(gray(&s, 0), &[-0.5, -1.5, -2.5, 2.5, 1.5, 0.5]);
    assert!(close(s.frames[0].image_position.unwrap(), [-0.5, 0.0, 0.0]));
    // The data file must exist.
    let header = "ObjectType = Image\nNDims = 2\nDimSize = 3 2\nElementType = MET_FLOAT\nElementDataFile = missing.raw\n";
    let err = load(&write(dir.path(), "missing.mhd", header.as_bytes())).unwrap_err().to_string();
    assert!(err.contains("missing.raw"), "{err}");
}

#[test]
fn zlib_compressed_metaimage() {
    let dir = tempfile::tempdir().unwrap();
    let packed = zlib(&ramp_u16_be());
    let header = format!(
        "ObjectType = Image\nNDims = 3\nDimSize = 3 2 2\nElementType = MET_USHORT\nElementByteOrderMSB = True\nCompressedData = True\nCompressedDataSize = {}\nElementDataFile = LOCAL\n",
        packed.len()
    );
    let mut bytes = header.into_bytes();
    bytes.extend(&packed);
    let s = load(&write(dir.path(), "packed.mha", &bytes)).unwrap();
    assert_eq!(gray(&s, 1), &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
    // A separate .zraw, and one that is cut short.
    write(dir.path(), "packed.zraw", &packed);
    let header = "ObjectType = Image\nNDims = 3\nDimSize = 3 2 2\nElementType = MET_USHORT\nElementByteOrderMSB = True\nCompressedData = True\nElementDataFile = packed.zraw\n";
    assert_eq!(gray(&load(&write(dir.path(), "packed.mhd", header.as_bytes())).unwrap(), 0), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    write(dir.path(), "cut.zraw", &packed[..packed.len() / 2]);
    let header = header.replace("packed.zraw", "cut.zraw");
    assert!(load(&write(dir.path(), "cut.mhd", header.as_bytes())).is_err());
    // DimSize larger than the stream holds: a size mismatch.
    let header =
        "ObjectType = Image\nNDims = 3\nDimSize = 3 2 3\nElementType = MET_USHORT\nCompressedData = True\nElementDataFile = packed.zraw\n";
    let err = load(&write(dir.path(), "wrong.mhd", header.as_bytes())).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn a_real_metaimage_opens() {
    // ITK's example data (Apache-2.0, see tests/data/volume/PROVENANCE.md): 128×128 uint8 MR.
    let path = Path::new("tests/data/volume/RatLungSlice1.mha");
    let s = load(path).unwrap();
    assert_eq!((s.frames.len(), s.frames[0].width, s.frames[0].height), (1, 128, 128));
    assert_eq!(s.meta.pixel_spacing_mm, Some([1.0, 1.0]));
    let out = tandem_cli(&["info", path.to_str().unwrap(), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Stored uint8 values hash as the .raw file's bytes.
    assert_eq!(v["pixels"]["sha256"], "181bd91b86f81c2d9649c138a2a54951b7e910bf61f4d62767da5164ea447eca");
    assert_eq!(v["pixels"]["shape"], serde_json::json!([128, 128]));
}

#[test]
fn folders_of_volumes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.nii", &Nifti::new(&[4, 3, 2], 4, 16).bytes(&ramp_i16()));
    write(dir.path(), "b.nii.gz", &gzip(&Nifti::new(&[4, 3, 3], 4, 16).bytes(&[ramp_i16(), ramp_i16()[..24].to_vec()].concat())));
    write(dir.path(), "broken.nii", b"not a volume at all");
    // The largest series of the folder.
    assert_eq!(load(dir.path()).unwrap().frames.len(), 3);
    let (prior, current) = tandem::study::hang_folder(dir.path(), &quiet).unwrap();
    assert_eq!((prior.frames.len(), current.frames.len()), (2, 3));
    // Only a broken volume: an error, not a panic.
    let lone = tempfile::tempdir().unwrap();
    write(lone.path(), "broken.nii", b"not a volume at all");
    assert!(load(lone.path()).is_err());
}
