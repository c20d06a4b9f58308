#!/usr/bin/env python3
"""Reads the EXIF GPS and orientation tags of a JPEG with `exifread` (an implementation
independent of the daemon's writer) and prints them as one JSON object.

Usage: exif_read.py FILE
Output: {"latitude_deg": ..., "longitude_deg": ..., "altitude_m": ..., "heading_deg": ...,
         "orientation": 1, "date": "YYYY:MM:DD", "make": "..."}
"""
import json
import sys

import exifread


def ratio(value):
    return float(value.num) / float(value.den)


def dms(tag, ref):
    d, m, s = (ratio(v) for v in tag.values)
    value = d + m / 60.0 + s / 3600.0
    return -value if str(ref) in ("S", "W") else value


def main():
    with open(sys.argv[1], "rb") as f:
        tags = exifread.process_file(f, details=False)
    out = {
        "latitude_deg": dms(tags["GPS GPSLatitude"], tags["GPS GPSLatitudeRef"]),
        "longitude_deg": dms(tags["GPS GPSLongitude"], tags["GPS GPSLongitudeRef"]),
        "altitude_m": ratio(tags["GPS GPSAltitude"].values[0])
        * (-1.0 if tags["GPS GPSAltitudeRef"].values[0] == 1 else 1.0),
        "heading_deg": ratio(tags["GPS GPSImgDirection"].values[0]),
        "heading_ref": str(tags["GPS GPSImgDirectionRef"]),
        "orientation": tags["Image Orientation"].values[0],
        "date": str(tags["GPS GPSDate"]),
        "make": str(tags["Image Make"]),
        "description": str(tags.get("Image ImageDescription", "")),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
