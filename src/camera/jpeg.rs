//! JPEG inspection (header only, before any decoding) and the downscale + re-encode step.
//!
//! [`inspect`] reads the markers up to the start of scan: it gives the size a decoder would
//! allocate for, so a 50 MP frame or a zero-sized one is refused before a single pixel is
//! decoded. [`render`] is the CPU-heavy part; callers run it with `spawn_blocking` under a
//! semaphore (see `camera::shell`).

use image::RgbImage;

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

/// Decodes a JPEG into RGB at full size, refusing it first if its header is over the pixel
/// limit.
pub fn decode(data: &[u8], pixels_max: u64) -> Result<RgbImage, RenderError> {
    decode_at_least(data, pixels_max, u32::MAX)
}

/// Most progressive scans accepted in one frame: a real encoder writes about ten; a crafted
/// file with thousands makes the decoder loop over the whole image for each (libjpeg-turbo's
/// advice against that exploit).
const PROGRESSIVE_SCANS_MAX: u32 = 500;

/// Decodes a JPEG into RGB at the smallest of libjpeg-turbo's DCT scales (k/8 of the size)
/// that is still at least `width_px_min` wide (full size if none is), refusing it first if its
/// header is over the pixel limit.
///
/// Scaling inside the inverse DCT skips most of the decoder's work for a thumbnail: a 4K
/// frame wanted 640 px wide is decoded at 1/4 (960 px), and only that is resized.
pub fn decode_at_least(
    data: &[u8],
    pixels_max: u64,
    width_px_min: u32,
) -> Result<RgbImage, RenderError> {
    let info = inspect(data, pixels_max)?;
    let decode_error = |e: turbojpeg::Error| RenderError::Decode(e.to_string());
    let mut decompressor = turbojpeg::Decompressor::new().map_err(decode_error)?;
    decompressor
        .set_scan_limit(PROGRESSIVE_SCANS_MAX)
        .map_err(decode_error)?;
    let header = decompressor.read_header(data).map_err(decode_error)?;
    // libjpeg reads the same start-of-frame as `inspect`; refuse a disagreement rather than
    // allocate for a size that was not checked.
    if (header.width, header.height) != (info.width_px as usize, info.height_px as usize) {
        return Err(RenderError::Decode(format!(
            "the decoder reads {}x{}, the header {}x{}",
            header.width, header.height, info.width_px, info.height_px
        )));
    }
    let scale = dct_scale(header.width, width_px_min as usize, header.is_lossless);
    decompressor
        .set_scaling_factor(scale)
        .map_err(decode_error)?;
    let scaled = header.scaled(scale);
    let mut image = turbojpeg::Image {
        pixels: vec![0u8; 3 * scaled.width * scaled.height],
        width: scaled.width,
        pitch: 3 * scaled.width,
        height: scaled.height,
        format: turbojpeg::PixelFormat::RGB,
    };
    decompressor
        .decompress(data, image.as_deref_mut())
        .map_err(decode_error)?;
    RgbImage::from_raw(scaled.width as u32, scaled.height as u32, image.pixels)
        .ok_or_else(|| RenderError::Decode("decoded buffer of the wrong size".into()))
}

/// The smallest k/8 scale (k = 1, 2, 4, 8: the ones libjpeg-turbo has SIMD inverse DCTs for)
/// that keeps `width_px` at least `width_px_min`; 1 for a lossless JPEG, which cannot scale.
fn dct_scale(width_px: usize, width_px_min: usize, lossless: bool) -> turbojpeg::ScalingFactor {
    if lossless {
        return turbojpeg::ScalingFactor::ONE;
    }
    [1, 2, 4]
        .into_iter()
        .map(|k| turbojpeg::ScalingFactor::new(k, 8))
        .find(|s| s.scale(width_px) >= width_px_min)
        .unwrap_or(turbojpeg::ScalingFactor::ONE)
}

/// Encodes RGB pixels as a baseline JPEG (4:2:0 chroma, as cameras do).
pub fn encode(image: &RgbImage, quality: u8) -> Result<Vec<u8>, RenderError> {
    let encode_error = |e: turbojpeg::Error| RenderError::Encode(e.to_string());
    let mut compressor = turbojpeg::Compressor::new().map_err(encode_error)?;
    compressor
        .set_quality(i32::from(quality.clamp(1, 100)))
        .map_err(encode_error)?;
    compressor
        .set_subsamp(turbojpeg::Subsamp::Sub2x2)
        .map_err(encode_error)?;
    let (width, height) = image.dimensions();
    let pixels = turbojpeg::Image {
        pixels: image.as_raw().as_slice(),
        width: width as usize,
        pitch: 3 * width as usize,
        height: height as usize,
        format: turbojpeg::PixelFormat::RGB,
    };
    compressor.compress_to_vec(pixels).map_err(encode_error)
}

/// Scales to at most `width_px_max` wide (never up), keeping the aspect ratio.
pub fn downscale(image: &RgbImage, width_px_max: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if w <= width_px_max || w == 0 || h == 0 {
        return image.clone();
    }
    let new_w = width_px_max.max(1);
    let new_h = ((u64::from(h) * u64::from(new_w)) / u64::from(w)).max(1) as u32;
    resize(image, new_w, new_h).unwrap_or_else(|| image::imageops::thumbnail(image, new_w, new_h))
}

/// Bilinear with its support widened by the reduction (antialiased, as Pillow's `resize`),
/// in SIMD; `None` only if the buffers disagree with their sizes, which they cannot.
fn resize(image: &RgbImage, width_px: u32, height_px: u32) -> Option<RgbImage> {
    use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
    let source = fast_image_resize::images::ImageRef::new(
        image.width(),
        image.height(),
        image.as_raw(),
        PixelType::U8x3,
    )
    .ok()?;
    let mut target = fast_image_resize::images::Image::new(width_px, height_px, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear));
    Resizer::new().resize(&source, &mut target, &options).ok()?;
    RgbImage::from_raw(width_px, height_px, target.into_vec())
}

/// Frame → downscaled JPEG under `bytes_max`: the whole serving path.
pub fn render(data: &[u8], request: RenderRequest) -> Result<Encoded, RenderError> {
    let scaled = decode_at_least(data, request.pixels_max, request.width_px_max.max(1))?;
    fit(&scaled, request)
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
    fn a_large_frame_is_decoded_at_the_smallest_dct_scale_still_wide_enough() {
        let jpeg = test_jpeg(2560, 1440);
        let size = |width_px_min| {
            decode_at_least(&jpeg, 1 << 30, width_px_min)
                .unwrap()
                .dimensions()
        };
        assert_eq!(size(320), (320, 180), "1/8");
        assert_eq!(size(640), (640, 360), "1/4");
        assert_eq!(size(641), (1280, 720), "1/2");
        assert_eq!(size(1281), (2560, 1440), "full size");
        assert_eq!(size(u32::MAX), (2560, 1440), "never larger than the frame");
        // The thumbnail made from the reduced decode is the picture the full decode gives.
        let full = downscale(&decode(&jpeg, 1 << 30).unwrap(), 640);
        let quick = downscale(&decode_at_least(&jpeg, 1 << 30, 640).unwrap(), 640);
        assert_eq!(full.dimensions(), quick.dimensions());
        let difference = full
            .as_raw()
            .iter()
            .zip(quick.as_raw())
            .map(|(a, b)| f64::from(a.abs_diff(*b)))
            .sum::<f64>()
            / full.as_raw().len() as f64;
        assert!(difference < 8.0, "mean absolute difference {difference}");
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
