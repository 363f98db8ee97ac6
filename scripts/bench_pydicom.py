"""Median time (ms) to open and decode each DICOM file with pydicom 3 + pylibjpeg.

Used by `tandem bench decode` so both decoders run in the same command on the same machine.
Usage: bench_pydicom.py RUNS FILE... ; prints a JSON list of medians, one per file.
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


def main():
    runs = int(sys.argv[1])
    medians = []
    for path in sys.argv[2:]:
        decode_ms(path)  # warm-up: page cache and plugin imports
        medians.append(statistics.median(decode_ms(path) for _ in range(runs)))
    print(json.dumps(medians))


if __name__ == "__main__":
    main()
