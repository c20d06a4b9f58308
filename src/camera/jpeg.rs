//! JPEG inspection (header only, before any decoding) and the downscale + re-encode step.
//!
//! [`inspect`] reads the markers up to the start of scan: it gives the size a decoder would
//! allocate for, so a 50 MP frame or a zero-sized one is refused before a single pixel is
//! decoded. [`render`] is the CPU-heavy part; callers run it with `spawn_blocking` under a
//! semaphore (see `camera::shell`).

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{ImageFormat, ImageReader, Limits, RgbImage};

/// What the header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    pub width_px: u32,
    pub height_px: u32,
}

impl JpegInfo {
    pub fn pixels(&self) -> u64 {
        u64::from(self.width_px) * u64::from(self.height_px)
    }
}

/// Why a frame was refused. Each kind has its own error counter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame (0 bytes)")]
    Empty,
    #[error("not a JPEG (no start-of-image marker)")]
    NotJpeg,
    #[error("corrupt JPEG: {0}")]
    Corrupt(String),
    #[error("zero-sized image ({width_px}x{height_px})")]
    ZeroSize { width_px: u32, height_px: u32 },
    #[error(
        "{width_px}x{height_px} is {} MP, above the limit of {} MP (camera.frame_pixels_max)",
        pixels / 1_000_000,
        pixels_max / 1_000_000
    )]
    TooManyPixels {
        width_px: u32,
        height_px: u32,
        pixels: u64,
        pixels_max: u64,
    },
    #[error("{bytes} bytes, above camera.frame_bytes_max ({bytes_max})")]
    TooManyBytes { bytes: usize, bytes_max: usize },
}

/// Reads the JPEG markers up to the first start-of-frame and checks the declared size
/// against `pixels_max`. Also requires an end-of-image marker at the end, so truncated
/// frames are refused here rather than decoded into half a picture.
pub fn inspect(data: &[u8], pixels_max: u64) -> Result<JpegInfo, FrameError> {
    if data.is_empty() {
        return Err(FrameError::Empty);
    }
    if !data.starts_with(&[0xFF, 0xD8]) {
        return Err(FrameError::NotJpeg);
    }
    // Some encoders pad after EOI; accept a little padding.
    let tail_start = data.len().saturating_sub(64);
    let tail = data.get(tail_start..).unwrap_or_default();
    if !tail.windows(2).any(|w| w == [0xFF, 0xD9]) {
        return Err(FrameError::Corrupt(
            "no end-of-image marker (truncated)".into(),
        ));
    }
    let mut i = 2usize;
    loop {
        // Skip fill bytes before a marker.
        while data.get(i) == Some(&0xFF) && data.get(i + 1) == Some(&0xFF) {
            i += 1;
        }
        let (Some(&0xFF), Some(&marker)) = (data.get(i), data.get(i + 1)) else {
            return Err(FrameError::Corrupt(format!("no marker at byte {i}")));
        };
        i += 2;
        match marker {
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => continue,
            0xD9 | 0xDA => {
                return Err(FrameError::Corrupt(
                    "no start-of-frame before the image data".into(),
                ));
            }
            _ => {}
        }
        let length = match (data.get(i), data.get(i + 1)) {
            (Some(&hi), Some(&lo)) => usize::from(u16::from_be_bytes([hi, lo])),
            _ => return Err(FrameError::Corrupt("segment header cut short".into())),
        };
        if length < 2 {
            return Err(FrameError::Corrupt(format!(
                "segment length {length} at byte {i}"
            )));
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            let segment = data
                .get(i + 2..i + length)
                .ok_or_else(|| FrameError::Corrupt("start-of-frame cut short".into()))?;
            let (Some(&h1), Some(&h0), Some(&w1), Some(&w0)) = (
                segment.get(1),
                segment.get(2),
                segment.get(3),
                segment.get(4),
            ) else {
                return Err(FrameError::Corrupt("start-of-frame too short".into()));
            };
            let height_px = u32::from(u16::from_be_bytes([h1, h0]));
            let width_px = u32::from(u16::from_be_bytes([w1, w0]));
            let info = JpegInfo {
                width_px,
                height_px,
            };
            if width_px == 0 || height_px == 0 {
                return Err(FrameError::ZeroSize {
                    width_px,
                    height_px,
                });
            }
            if info.pixels() > pixels_max {
                return Err(FrameError::TooManyPixels {
                    width_px,
                    height_px,
                    pixels: info.pixels(),
                    pixels_max,
                });
            }
            return Ok(info);
        }
        i += length;
    }
}

/// A re-encoded image.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub jpeg: Vec<u8>,
    pub width_px: u32,
    pub height_px: u32,
    pub quality: u8,
}

/// Why an image could not be produced.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("JPEG decoding failed: {0}")]
    Decode(String),
    #[error("JPEG encoding failed: {0}")]
    Encode(String),
    #[error(
        "even at {width_px} px wide and quality {quality} the image is {bytes} bytes, above {bytes_max}"
    )]
    TooLarge {
        width_px: u32,
        quality: u8,
        bytes: usize,
        bytes_max: usize,
    },
}

/// What a caller asks of [`render`].
#[derive(Debug, Clone, Copy)]
pub struct RenderRequest {
    /// Widest output; the aspect ratio is kept and nothing is upscaled.
    pub width_px_max: u32,
    /// Quality of the first attempt (1..=100).
    pub quality: u8,
    /// The output is never larger than this: quality, then size, are lowered until it fits.
    pub bytes_max: usize,
    /// Refuse inputs above this many pixels before decoding.
    pub pixels_max: u64,
}

/// Lowest quality tried before the image is made smaller instead.
const QUALITY_FLOOR: u8 = 40;
/// Smallest width tried before giving up.
const WIDTH_FLOOR_PX: u32 = 64;

/// Decodes a JPEG into RGB, refusing it first if its header is over the pixel limit.
pub fn decode(data: &[u8], pixels_max: u64) -> Result<RgbImage, RenderError> {
    let info = inspect(data, pixels_max)?;
    let mut reader = ImageReader::with_format(Cursor::new(data), ImageFormat::Jpeg);
    let mut limits = Limits::default();
    limits.max_image_width = Some(info.width_px);
    limits.max_image_height = Some(info.height_px);
    // RGB output plus the decoder's own working memory.
    limits.max_alloc = Some(info.pixels().saturating_mul(4).saturating_add(16 << 20));
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| RenderError::Decode(e.to_string()))?;
    Ok(image.into_rgb8())
}

/// Encodes RGB pixels as a baseline JPEG.
pub fn encode(image: &RgbImage, quality: u8) -> Result<Vec<u8>, RenderError> {
    let mut out = Vec::with_capacity(64 * 1024);
    JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100))
        .encode_image(image)
        .map_err(|e| RenderError::Encode(e.to_string()))?;
    Ok(out)
}

/// Scales to at most `width_px_max` wide (never up), keeping the aspect ratio.
pub fn downscale(image: &RgbImage, width_px_max: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w <= width_px_max || w == 0 {
        return image.clone();
    }
    let new_w = width_px_max.max(1);
    let new_h = ((u64::from(h) * u64::from(new_w)) / u64::from(w)).max(1) as u32;
    // Area averaging: fast and without aliasing for large reductions.
    image::imageops::thumbnail(image, new_w, new_h)
}

/// Frame → downscaled JPEG under `bytes_max`: the whole serving path.
pub fn render(data: &[u8], request: RenderRequest) -> Result<Encoded, RenderError> {
    let full = decode(data, request.pixels_max)?;
    fit(&full, request)
}

/// Downscales and encodes an already decoded image until it fits in `bytes_max`.
pub fn fit(full: &RgbImage, request: RenderRequest) -> Result<Encoded, RenderError> {
    let mut width_px = request.width_px_max.min(full.width()).max(1);
    let mut quality = request.quality.clamp(1, 100);
    loop {
        let scaled = downscale(full, width_px);
        let jpeg = encode(&scaled, quality)?;
        if jpeg.len() <= request.bytes_max {
            return Ok(Encoded {
                jpeg,
                width_px: scaled.width(),
                height_px: scaled.height(),
                quality,
            });
        }
        if quality > QUALITY_FLOOR {
            quality = quality.saturating_sub(20).max(QUALITY_FLOOR);
        } else if width_px > WIDTH_FLOOR_PX {
            width_px = (width_px * 3 / 4).max(WIDTH_FLOOR_PX);
        } else {
            return Err(RenderError::TooLarge {
                width_px,
                quality,
                bytes: jpeg.len(),
                bytes_max: request.bytes_max,
            });
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A gradient image with some detail, as a JPEG.
    pub(crate) fn test_jpeg(width: u32, height: u32) -> Vec<u8> {
        let image = RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([
                (x * 255 / width.max(1)) as u8,
                (y * 255 / height.max(1)) as u8,
                ((x ^ y) & 0xFF) as u8,
            ])
        });
        encode(&image, 90).unwrap()
    }

    /// Rewrites the declared size in the start-of-frame segment.
    pub(crate) fn with_declared_size(mut jpeg: Vec<u8>, width: u16, height: u16) -> Vec<u8> {
        let sof = jpeg
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("baseline SOF");
        jpeg[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
        jpeg
    }

    #[test]
    fn header_gives_the_size_without_decoding() {
        let jpeg = test_jpeg(320, 200);
        let info = inspect(&jpeg, 1_000_000).unwrap();
        assert_eq!((info.width_px, info.height_px), (320, 200));
    }

    #[test]
    fn fifty_megapixels_are_refused_before_decoding() {
        // 8660 x 5774 = 50 MP declared, a few hundred bytes of data.
        let jpeg = with_declared_size(test_jpeg(16, 16), 8660, 5774);
        let error = inspect(&jpeg, 24_000_000).unwrap_err();
        assert!(
            matches!(error, FrameError::TooManyPixels { pixels, .. } if pixels == 8660 * 5774),
            "{error}"
        );
        assert!(matches!(
            render(
                &jpeg,
                RenderRequest {
                    width_px_max: 640,
                    quality: 80,
                    bytes_max: 100_000,
                    pixels_max: 24_000_000
                }
            ),
            Err(RenderError::Frame(FrameError::TooManyPixels { .. }))
        ));
    }

    #[test]
    fn zero_sized_empty_corrupt_and_truncated_frames_are_refused() {
        let jpeg = test_jpeg(32, 32);
        assert_eq!(inspect(&[], 1 << 30), Err(FrameError::Empty));
        assert_eq!(inspect(b"hello world", 1 << 30), Err(FrameError::NotJpeg));
        assert!(matches!(
            inspect(&with_declared_size(jpeg.clone(), 0, 32), 1 << 30),
            Err(FrameError::ZeroSize { width_px: 0, .. })
        ));
        let truncated = &jpeg[..jpeg.len() / 2];
        assert!(matches!(
            inspect(truncated, 1 << 30),
            Err(FrameError::Corrupt(_))
        ));
        let mut garbage = vec![0xFF, 0xD8];
        garbage.extend((0..500u32).map(|i| (i * 7919 % 251) as u8));
        garbage.extend([0xFF, 0xD9]);
        assert!(matches!(
            inspect(&garbage, 1 << 30),
            Err(FrameError::Corrupt(_))
        ));
    }

    #[test]
    fn render_downscales_and_stays_under_the_byte_limit() {
        let jpeg = test_jpeg(1280, 720);
        let request = RenderRequest {
            width_px_max: 640,
            quality: 90,
            bytes_max: 200_000,
            pixels_max: 24_000_000,
        };
        let out = render(&jpeg, request).unwrap();
        assert_eq!((out.width_px, out.height_px), (640, 360));
        let back = decode(&out.jpeg, 1 << 30).unwrap();
        assert_eq!(back.dimensions(), (640, 360));
        // A tight limit lowers quality, then size, and still fits.
        let tight = render(
            &jpeg,
            RenderRequest {
                bytes_max: 6_000,
                ..request
            },
        )
        .unwrap();
        assert!(tight.jpeg.len() <= 6_000, "{}", tight.jpeg.len());
        assert!(tight.quality < 90 || tight.width_px < 640);
        // An impossible limit is an error, never an oversized image.
        let error = render(
            &jpeg,
            RenderRequest {
                bytes_max: 100,
                ..request
            },
        )
        .unwrap_err();
        assert!(matches!(error, RenderError::TooLarge { .. }), "{error}");
    }

    #[test]
    fn small_images_are_not_upscaled() {
        let out = render(
            &test_jpeg(100, 50),
            RenderRequest {
                width_px_max: 640,
                quality: 80,
                bytes_max: 100_000,
                pixels_max: 1 << 30,
            },
        )
        .unwrap();
        assert_eq!((out.width_px, out.height_px), (100, 50));
    }
}
