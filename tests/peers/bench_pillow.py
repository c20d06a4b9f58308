#!/usr/bin/env python3
"""The camera benchmark's reference: the same work as `cargo bench --bench camera`, done by
Pillow on the same frames: decode the JPEG, downscale to 640 px wide, encode at quality 80.

Usage: bench_pillow.py FRAME.jpg [RUNS]
(`cargo bench --bench camera` writes target/camera-bench/frame-1920x1080.jpg and
frame-3840x2160.jpg.) Prints one line per variant:
  pillow WxH -> 640: mean M ms, p50 P ms, min N ms (R runs)
"""
import io
import statistics
import sys
import time

from PIL import Image


def once(frame, draft):
    image = Image.open(io.BytesIO(frame))
    if draft:
        # Pillow's shortcut: libjpeg decodes at 1/2, 1/4 or 1/8 scale (DCT scaling).
        image.draft("RGB", (640, 640 * image.height // image.width))
    image = image.convert("RGB")
    height = image.height * 640 // image.width
    small = image.resize((640, height), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    small.save(out, "JPEG", quality=80)
    return image.size


def main():
    path = sys.argv[1]
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    with open(path, "rb") as f:
        frame = f.read()
    for draft in (False, True):
        once(frame, draft)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            once(frame, draft)
            samples.append((time.perf_counter() - start) * 1000.0)
        width, height = Image.open(io.BytesIO(frame)).size
        label = "pillow+draft" if draft else "pillow"
        print(
            f"{label} {width}x{height} -> 640: mean {statistics.mean(samples):.1f} ms, "
            f"p50 {statistics.median(samples):.1f} ms, min {min(samples):.1f} ms ({runs} runs)"
        )


if __name__ == "__main__":
    main()
