#!/usr/bin/env python3
"""The camera benchmark's reference: the same work as `cargo bench --bench camera`, done by
Pillow on the same frames: decode the JPEG, downscale to 640 px wide, encode at quality 80.

Usage: bench_pillow.py FRAME.jpg [RUNS]
(`cargo bench --bench camera` writes target/camera-bench/frame-1920x1080.jpg and
frame-3840x2160.jpg.) Prints one line per variant, CPU time of the thread (time.thread_time, which other
processes on the machine do not inflate) and wall time:
  pillow WxH -> 640: CPU mean M ms, min N ms; wall mean W ms, p50 P ms (R runs)
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
        samples, cpu = [], []
        for _ in range(runs):
            start, start_cpu = time.perf_counter(), time.thread_time()
            once(frame, draft)
            cpu.append((time.thread_time() - start_cpu) * 1000.0)
            samples.append((time.perf_counter() - start) * 1000.0)
        width, height = Image.open(io.BytesIO(frame)).size
        label = "pillow+draft" if draft else "pillow"
        print(
            f"{label} {width}x{height} -> 640: CPU mean {statistics.mean(cpu):.2f} ms, "
            f"min {min(cpu):.2f} ms; wall mean {statistics.mean(samples):.2f} ms, "
            f"p50 {statistics.median(samples):.2f} ms ({runs} runs)"
        )


if __name__ == "__main__":
    main()
