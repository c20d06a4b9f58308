//! EXIF APP1 segment with GPS position, altitude, heading and orientation, built by hand.
//!
//! The segment is small and fixed in shape (two IFDs, a dozen tags), so it is written
//! directly as big-endian TIFF rather than through a crate; the tests read it back with an
//! independent reader (`tests/peers/exif_read.py`, Python `exifread`).

/// Where and when a picture was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoTag {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Above mean sea level.
    pub altitude_m: f64,
    /// Direction the camera's top edge points, degrees clockwise from true north.
    pub heading_deg: f64,
    /// Milliseconds since the Unix epoch, UTC.
    pub unix_ms: i64,
}

/// Longest ImageDescription written (characters).
const DESCRIPTION_LEN_MAX: usize = 200;

/// A calendar date and time in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millisecond: u32,
}

impl Utc {
    /// From milliseconds since the Unix epoch (proleptic Gregorian calendar).
    pub fn from_unix_ms(unix_ms: i64) -> Utc {
        let days = unix_ms.div_euclid(86_400_000);
        let ms_of_day = unix_ms.rem_euclid(86_400_000);
        // Days to civil date (H. Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc {
            year,
            month,
            day,
            hour: (ms_of_day / 3_600_000) as u32,
            minute: (ms_of_day / 60_000 % 60) as u32,
            second: (ms_of_day / 1000 % 60) as u32,
            millisecond: (ms_of_day % 1000) as u32,
        }
    }

    /// `2026-11-21T13:05:09.123Z`.
    pub fn iso8601(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millisecond
        )
    }

    /// `20261121T130509123Z`, safe in file names.
    pub fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millisecond
        )
    }
}

const ASCII: u16 = 2;
const SHORT: u16 = 3;
const LONG: u16 = 4;
const RATIONAL: u16 = 5;
const BYTE: u16 = 1;

struct Entry {
    tag: u16,
    kind: u16,
    count: u32,
    data: Vec<u8>,
}

fn ascii(tag: u16, text: &str) -> Entry {
    let mut data: Vec<u8> = text.bytes().filter(|b| b.is_ascii() && *b != 0).collect();
    data.push(0);
    Entry {
        tag,
        kind: ASCII,
        count: data.len() as u32,
        data,
    }
}

fn rationals(tag: u16, values: &[(u32, u32)]) -> Entry {
    let mut data = Vec::with_capacity(values.len() * 8);
    for (n, d) in values {
        data.extend(n.to_be_bytes());
        data.extend(d.to_be_bytes());
    }
    Entry {
        tag,
        kind: RATIONAL,
        count: values.len() as u32,
        data,
    }
}

/// Degrees as degrees, minutes and seconds (seconds to 1/10000).
fn dms(value_deg: f64) -> [(u32, u32); 3] {
    let v = if value_deg.is_finite() {
        value_deg.abs().min(180.0)
    } else {
        0.0
    };
    let degrees = v.floor();
    let minutes = ((v - degrees) * 60.0).floor();
    let seconds = (v - degrees - minutes / 60.0) * 3600.0;
    [
        (degrees as u32, 1),
        (minutes as u32, 1),
        ((seconds * 10_000.0).round().max(0.0) as u32, 10_000),
    ]
}

/// Writes one IFD at `offset` (relative to the TIFF header); values longer than 4 bytes
/// go right after it. Returns the offset just past what was written.
fn write_ifd(tiff: &mut Vec<u8>, entries: &[Entry], next_ifd: u32) {
    let offset = tiff.len();
    let mut data_offset = offset + 2 + entries.len() * 12 + 4;
    let mut data_area = Vec::new();
    tiff.extend((entries.len() as u16).to_be_bytes());
    for entry in entries {
        tiff.extend(entry.tag.to_be_bytes());
        tiff.extend(entry.kind.to_be_bytes());
        tiff.extend(entry.count.to_be_bytes());
        if entry.data.len() <= 4 {
            let mut inline = [0u8; 4];
            for (slot, byte) in inline.iter_mut().zip(&entry.data) {
                *slot = *byte;
            }
            tiff.extend(inline);
        } else {
            tiff.extend((data_offset as u32).to_be_bytes());
            data_area.extend(&entry.data);
            // Values start on a word boundary.
            if entry.data.len() % 2 == 1 {
                data_area.push(0);
            }
            data_offset = offset + 2 + entries.len() * 12 + 4 + data_area.len();
        }
    }
    tiff.extend(next_ifd.to_be_bytes());
    tiff.extend(data_area);
}

/// The APP1 segment (marker included) for `tag`, with `description` as ImageDescription.
pub fn app1_segment(tag: &GeoTag, description: &str) -> Vec<u8> {
    let utc = Utc::from_unix_ms(tag.unix_ms);
    let date_time = format!(
        "{:04}:{:02}:{:02} {:02}:{:02}:{:02}",
        utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second
    );
    let description: String = description.chars().take(DESCRIPTION_LEN_MAX).collect();
    // IFD0 first; the GPS IFD's offset is known once IFD0 is written, so IFD0 is built
    // twice: once to measure it, once with the real offset.
    let ifd0 = |gps_offset: u32| {
        vec![
            ascii(0x010E, &description),
            ascii(0x010F, "flight-companion"),
            Entry {
                tag: 0x0112, // Orientation: top-left, as captured.
                kind: SHORT,
                count: 1,
                data: 1u16.to_be_bytes().to_vec(),
            },
            ascii(0x0132, &date_time),
            Entry {
                tag: 0x8825, // GPS IFD pointer.
                kind: LONG,
                count: 1,
                data: gps_offset.to_be_bytes().to_vec(),
            },
        ]
    };
    let mut tiff = vec![b'M', b'M', 0x00, 0x2A, 0, 0, 0, 8];
    let mut probe = tiff.clone();
    write_ifd(&mut probe, &ifd0(0), 0);
    let gps_offset = probe.len() as u32;
    write_ifd(&mut tiff, &ifd0(gps_offset), 0);

    let heading = if tag.heading_deg.is_finite() {
        tag.heading_deg.rem_euclid(360.0)
    } else {
        0.0
    };
    let altitude = if tag.altitude_m.is_finite() {
        tag.altitude_m
    } else {
        0.0
    };
    let gps = vec![
        Entry {
            tag: 0x0000,
            kind: BYTE,
            count: 4,
            data: vec![2, 3, 0, 0],
        },
        ascii(0x0001, if tag.latitude_deg < 0.0 { "S" } else { "N" }),
        rationals(0x0002, &dms(tag.latitude_deg)),
        ascii(0x0003, if tag.longitude_deg < 0.0 { "W" } else { "E" }),
        rationals(0x0004, &dms(tag.longitude_deg)),
        Entry {
            tag: 0x0005,
            kind: BYTE,
            count: 1,
            data: vec![u8::from(altitude < 0.0)],
        },
        rationals(
            0x0006,
            &[((altitude.abs().min(40_000.0) * 100.0).round() as u32, 100)],
        ),
        rationals(
            0x0007,
            &[
                (utc.hour, 1),
                (utc.minute, 1),
                (utc.second * 1000 + utc.millisecond, 1000),
            ],
        ),
        ascii(0x0010, "T"),
        rationals(0x0011, &[((heading * 100.0).round() as u32, 100)]),
        ascii(
            0x001D,
            &format!("{:04}:{:02}:{:02}", utc.year, utc.month, utc.day),
        ),
    ];
    write_ifd(&mut tiff, &gps, 0);

    let mut segment = vec![0xFF, 0xE1];
    let length = (2 + 6 + tiff.len()) as u16;
    segment.extend(length.to_be_bytes());
    segment.extend(b"Exif\0\0");
    segment.extend(tiff);
    segment
}

/// The JPEG with `segment` inserted right after the start-of-image marker, or `None` if
/// `jpeg` does not start with one.
pub fn insert_app1(jpeg: &[u8], segment: &[u8]) -> Option<Vec<u8>> {
    let rest = jpeg.strip_prefix(&[0xFF, 0xD8])?;
    let mut out = Vec::with_capacity(jpeg.len() + segment.len());
    out.extend([0xFF, 0xD8]);
    out.extend(segment);
    out.extend(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_calendar_is_right_on_known_dates() {
        assert_eq!(Utc::from_unix_ms(0).iso8601(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Utc::from_unix_ms(951_782_400_000).iso8601(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Utc::from_unix_ms(1_795_266_309_123).iso8601(),
            "2026-11-21T13:05:09.123Z"
        );
        assert_eq!(
            Utc::from_unix_ms(1_795_266_309_123).compact(),
            "20261121T130509123Z"
        );
    }

    #[test]
    fn degrees_minutes_seconds() {
        let [d, m, s] = dms(-35.363_261);
        assert_eq!(d, (35, 1));
        assert_eq!(m, (21, 1));
        let seconds = f64::from(s.0) / f64::from(s.1);
        assert!((seconds - 47.7396).abs() < 1e-3, "{seconds}");
    }

    #[test]
    fn segment_is_well_formed_and_its_length_matches() {
        let tag = GeoTag {
            latitude_deg: -35.363_261,
            longitude_deg: 149.165_230,
            altitude_m: 604.5,
            heading_deg: 90.0,
            unix_ms: 1_795_266_309_123,
        };
        let segment = app1_segment(&tag, "roll 1.0 pitch -2.0");
        assert_eq!(&segment[..2], &[0xFF, 0xE1]);
        let length = usize::from(u16::from_be_bytes([segment[2], segment[3]]));
        assert_eq!(length + 2, segment.len());
        assert_eq!(&segment[4..10], b"Exif\0\0");
        assert_eq!(&segment[10..14], b"MM\0*");
        let jpeg = crate::camera::jpeg::tests::test_jpeg(8, 8);
        let tagged = insert_app1(&jpeg, &segment).unwrap();
        // Still a decodable JPEG of the same size.
        let image = crate::camera::jpeg::decode(&tagged, 1 << 20).unwrap();
        assert_eq!(image.dimensions(), (8, 8));
        assert!(insert_app1(b"nope", &segment).is_none());
    }
}
