#!/usr/bin/env python3
"""The camera benchmark's reference: the same work as `cargo bench --bench camera` done by
Pillow: decode a JPEG frame, downscale it to 640 px wide, encode it at quality 80.

Usage: bench_pillow.py WIDTH HEIGHT ITERATIONS
Frames are made the same way as the Rust benchmark's (a gradient with detail, encoded at
quality 90 by the same library as the rest of this run). Prints one line per variant:
  pillow WIDTHxHEIGHT -> 640: MEAN ms per frame (N runs)
"""
import io
import sys
import time

from PIL import Image


def make_frame(width, height):
    image = Image.new("RGB", (width, height))
    pixels = bytes(
        b
        for y in range(height)
        for x in range(width)
        for b in (x * 255 // width, y * 255 // height, (x ^ y) & 0xFF)
    )
    image.frombytes(pixels)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def once(frame, draft):
    image = Image.open(io.BytesIO(frame))
    if draft:
        # Pillow's shortcut: let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling).
        image.draft("RGB", (640, 640 * image.height // image.width))
    image = image.convert("RGB")
    height = image.height * 640 // image.width
    small = image.resize((640, height), Image.Resampling.BILINEAR, reducing_gap=None)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return len(out.getvalue())


def main():
    width, height, runs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    frame = make_frame(width, height)
    for draft in (False, True):
        once(frame, draft)
        start = time.perf_counter()
        for _ in range(runs):
            once(frame, draft)
        mean_ms = (time.perf_counter() - start) / runs * 1000.0
        label = "pillow+draft" if draft else "pillow"
        print(f"{label} {width}x{height} -> 640: {mean_ms:.1f} ms per frame ({runs} runs)")


if __name__ == "__main__":
    main()
