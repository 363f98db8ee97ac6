"""Median time (ms) to open and decode each DICOM file with pydicom 3 + pylibjpeg.

Used by `tandem bench decode` so both decoders run in the same command on the same machine.
Usage: bench_pydicom.py RUNS FILE... ; prints a JSON list of medians, one per file.
       bench_pydicom.py --make-jpegls SRC DST ; writes SRC re-encoded as JPEG-LS lossless (CharLS).
"""
import json
import statistics
import sys
import time

import pydicom


def decode_ms(path):
    start = time.perf_counter()
    ds = pydicom.dcmread(path)
    ds.pixel_array
    return (time.perf_counter() - start) * 1e3


def make_jpegls(src, dst):
    """Re-encodes SRC as JPEG-LS lossless with CharLS (pyjpegls) into DST."""
    from pydicom.uid import JPEGLSLossless

    ds = pydicom.dcmread(src)
    ds.compress(JPEGLSLossless)
    ds.save_as(dst)


def main():
    if sys.argv[1] == "--make-jpegls":
        make_jpegls(sys.argv[2], sys.argv[3])
        return
    runs = int(sys.argv[1])
    medians = []
    for path in sys.argv[2:]:
        decode_ms(path)  # warm-up: page cache and plugin imports
        medians.append(statistics.median(decode_ms(path) for _ in range(runs)))
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
