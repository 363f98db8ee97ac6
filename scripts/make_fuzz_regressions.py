#!/usr/bin/env python3
"""Writes tests/data/fuzz/*.dcm: conformance files with the corruptions that once made Tandem
allocate gigabytes (issue #13, #18). Byte edits only, so no DICOM library is needed."""
import struct, pathlib

src = pathlib.Path(__file__).resolve().parent.parent / "tests/data/dicom"
out = pathlib.Path(__file__).resolve().parent.parent / "tests/data/fuzz"
out.mkdir(exist_ok=True)

def tag(g, e):
    return struct.pack("<HH", g, e)

def set_us(data, g, e, value):
    i = data.index(tag(g, e) + b"US")
    data[i + 8:i + 10] = struct.pack("<H", value)

# 1. Rows = Columns = 65535 in a 130 KB-class native file: 8.6 GB declared, a few KB present.
d = bytearray((src / "MR_small.dcm").read_bytes())
set_us(d, 0x0028, 0x0010, 0xFFFF); set_us(d, 0x0028, 0x0011, 0xFFFF)
(out / "rows_cols_65535_native.dcm").write_bytes(d)

# 2. An element (Series Description) in implicit VR whose length claims 4 GB.
d = bytearray((src / "MR_small_implicit.dcm").read_bytes())
i = d.index(tag(0x0008, 0x0060))  # Modality
d[i + 4:i + 8] = struct.pack("<I", 0xFFFFFFF0)
(out / "huge_element_length_implicit.dcm").write_bytes(d)

# 3. Rows written as an IS of 4294967296, which wraps rows*cols to 0 in 64-bit arithmetic.
d = bytearray((src / "MR_small.dcm").read_bytes())
i = d.index(tag(0x0028, 0x0010) + b"US")
d[i:i + 10] = tag(0x0028, 0x0010) + b"IS" + struct.pack("<H", 10) + b"4294967296"
(out / "rows_4294967296.dcm").write_bytes(d)

# 4. RLE with Rows = Columns = 65535: its segments are far shorter than the frame.
d = bytearray((src / "MR_small_RLE.dcm").read_bytes())
set_us(d, 0x0028, 0x0010, 0xFFFF); set_us(d, 0x0028, 0x0011, 0xFFFF)
(out / "rle_short_segments.dcm").write_bytes(d)

# 5. JPEG-LS whose frame header claims 65535 x 65535 while the data set says 64 x 64.
d = bytearray((src / "MR_small_jpeg_ls_lossless.dcm").read_bytes())
i = d.index(b"\xff\xf7")
d[i + 5:i + 9] = b"\xff\xff\xff\xff"
(out / "jpegls_sof_65535.dcm").write_bytes(d)

# 6. JPEG baseline whose SOF claims 65535 x 65535.
d = bytearray((src / "SC_rgb_jpeg_dcmtk.dcm").read_bytes())
i = d.index(b"\xff\xc0")
d[i + 5:i + 9] = b"\xff\xff\xff\xff"
(out / "jpeg_sof_65535.dcm").write_bytes(d)
