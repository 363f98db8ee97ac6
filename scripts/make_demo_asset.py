"""Builds assets/demo_prior.png from RG1_UNCR.dcm (NEMA WG04 chest CR via pydicom-data, MIT).

MONOCHROME1 is inverted so bright means dense, the 0.5-99.5 percentile range is mapped to 8 bits,
and the image is area-downsampled to 512 px wide. Usage: make_demo_asset.py PATH/TO/RG1_UNCR.dcm
"""
import sys

import numpy as np
import pydicom
from PIL import Image

ds = pydicom.dcmread(sys.argv[1])
a = ds.pixel_array.astype(np.float64)
if ds.PhotometricInterpretation == "MONOCHROME1":
    a = a.max() - a
lo, hi = np.percentile(a, [0.5, 99.5])
a = np.clip((a - lo) / (hi - lo), 0, 1) * 255
img = Image.fromarray(a.astype(np.uint8))
w = 512
img = img.resize((w, round(img.height * w / img.width)), Image.BOX)
img.save("assets/demo_prior.png", optimize=True)
print(img.size)
