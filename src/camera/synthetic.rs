//! The synthetic camera: a nadir (straight down) view of procedurally textured ground.
//!
//! The texture is a pure function of world coordinates (latitude and longitude),
//! so the same place always looks the same, pictures change as the vehicle moves, and a
//! picture matches where the vehicle reports it is. Fields of varying crops, a road grid
//! every 250 m and fine noise give a view that shows movement, heading and altitude.
//! Pure and deterministic: no clock, no randomness.

use image::{Rgb, RgbImage};

/// Horizontal field of view of the simulated lens.
pub const FIELD_OF_VIEW_DEG: f64 = 70.0;
/// Below this height the view is drawn as if from here (a camera on the ground sees a
/// blur, not a zero-sized footprint).
const HEIGHT_M_MIN: f64 = 2.0;
/// Metres per degree of latitude (spherical Earth, good enough for a texture).
const M_PER_DEG: f64 = 111_320.0;
/// Spacing of the road grid.
const ROAD_SPACING_M: f64 = 250.0;
const ROAD_WIDTH_M: f64 = 7.0;
/// Size of a field (crop) cell.
const FIELD_M: f64 = 60.0;

/// Where the camera is and where it looks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    pub latitude_deg: f64,
    pub longitude_deg: f64,
    /// Height above the ground (the vehicle's altitude above home).
    pub height_m: f64,
    /// The top of the picture points this way, degrees clockwise from north.
    pub heading_deg: f64,
}

/// Ground width covered by the picture at `height_m`.
pub fn footprint_width_m(height_m: f64) -> f64 {
    let h = if height_m.is_finite() {
        height_m.max(HEIGHT_M_MIN)
    } else {
        HEIGHT_M_MIN
    };
    2.0 * h * (FIELD_OF_VIEW_DEG.to_radians() / 2.0).tan()
}

/// Renders a `width` x `height` picture of the ground below `pose`.
pub fn render(pose: Pose, width: u32, height: u32) -> RgbImage {
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let lat = finite(pose.latitude_deg).clamp(-89.0, 89.0);
    // Texture coordinates are degrees scaled to metres at the equator: a pure function of
    // latitude and longitude, so a place looks the same from any position. East-west they
    // are stretched by 1/cos(latitude), which only changes the texture's look.
    let north0 = lat * M_PER_DEG;
    let east0 = finite(pose.longitude_deg) * M_PER_DEG;
    let east_stretch = 1.0 / lat.to_radians().cos();
    let m_per_px = footprint_width_m(pose.height_m) / f64::from(width.max(1));
    let (sin, cos) = finite(pose.heading_deg).to_radians().sin_cos();
    let cx = f64::from(width) / 2.0;
    let cy = f64::from(height) / 2.0;
    RgbImage::from_fn(width, height, |x, y| {
        let right = (f64::from(x) + 0.5 - cx) * m_per_px;
        let forward = (cy - f64::from(y) - 0.5) * m_per_px;
        let north = north0 + forward * cos - right * sin;
        let east = east0 + (forward * sin + right * cos) * east_stretch;
        ground(north, east)
    })
}

/// The colour of the ground at a world point.
fn ground(north: f64, east: f64) -> Rgb<u8> {
    let on_road = |v: f64| v.rem_euclid(ROAD_SPACING_M) < ROAD_WIDTH_M;
    let detail = value_noise(north / 1.5, east / 1.5, 3);
    if on_road(north) || on_road(east) {
        let g = 95.0 + 25.0 * detail;
        return Rgb([g as u8, g as u8, (g + 5.0) as u8]);
    }
    // Each field cell gets one of a few crops from a hash of its index.
    let cell = hash(
        (north / FIELD_M).floor() as i64,
        (east / FIELD_M).floor() as i64,
        7,
    );
    let base: [f64; 3] = match cell % 5 {
        0 => [70.0, 120.0, 45.0],  // grass
        1 => [140.0, 110.0, 70.0], // ploughed soil
        2 => [190.0, 170.0, 90.0], // wheat
        3 => [50.0, 90.0, 40.0],   // woodland
        _ => [110.0, 140.0, 60.0], // pasture
    };
    // Large-scale variation plus fine grain.
    let broad = value_noise(north / 40.0, east / 40.0, 11);
    let shade = 0.75 + 0.35 * broad + 0.2 * (detail - 0.5);
    // Crop rows, oriented per field, make motion and rotation visible up close.
    let rows = if cell % 5 == 2 || cell % 5 == 1 {
        let along = if cell & 8 == 0 { north } else { east };
        if along.rem_euclid(3.0) < 0.8 {
            0.85
        } else {
            1.0
        }
    } else {
        1.0
    };
    let c = |v: f64| (v * shade * rows).clamp(0.0, 255.0) as u8;
    Rgb([c(base[0]), c(base[1]), c(base[2])])
}

/// Smoothly interpolated lattice noise in [0, 1).
fn value_noise(u: f64, v: f64, seed: u64) -> f64 {
    let (fu, fv) = (u.floor(), v.floor());
    let (iu, iv) = (fu as i64, fv as i64);
    let (tu, tv) = (smooth(u - fu), smooth(v - fv));
    let corner =
        |du: i64, dv: i64| (hash(iu + du, iv + dv, seed) >> 11) as f64 / (1u64 << 53) as f64;
    let top = corner(0, 0) + (corner(1, 0) - corner(0, 0)) * tu;
    let bottom = corner(0, 1) + (corner(1, 1) - corner(0, 1)) * tu;
    top + (bottom - top) * tv
}

fn smooth(t: f64) -> f64 {
    t * t * (3.0 - 2.0 * t)
}

/// A well-mixed 64-bit hash of a lattice point (SplitMix64 finaliser).
fn hash(a: i64, b: i64, seed: u64) -> u64 {
    let mut z = (a as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((b as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F))
        .wrapping_add(seed.wrapping_mul(0x1656_67B1_9E37_79F9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: Pose = Pose {
        latitude_deg: -35.363_261,
        longitude_deg: 149.165_230,
        height_m: 30.0,
        heading_deg: 0.0,
    };

    fn mean_abs_difference(a: &RgbImage, b: &RgbImage) -> f64 {
        let total: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        total as f64 / a.as_raw().len() as f64
    }

    #[test]
    fn same_pose_same_picture_and_moving_changes_it() {
        let a = render(HOME, 160, 120);
        assert_eq!(a, render(HOME, 160, 120));
        let moved = Pose {
            latitude_deg: HOME.latitude_deg + 100.0 / M_PER_DEG,
            ..HOME
        };
        let b = render(moved, 160, 120);
        assert!(mean_abs_difference(&a, &b) > 5.0);
        let turned = Pose {
            heading_deg: 90.0,
            ..HOME
        };
        assert!(mean_abs_difference(&a, &render(turned, 160, 120)) > 5.0);
    }

    #[test]
    fn a_small_move_shifts_the_picture_by_the_expected_pixels() {
        // At 30 m the footprint is 42 m wide; over 160 px that is 0.26 m per pixel.
        // Moving 2.62 m north (10 px) shifts the picture down by 10 rows.
        let m_per_px = footprint_width_m(30.0) / 160.0;
        let moved = Pose {
            latitude_deg: HOME.latitude_deg + 10.0 * m_per_px / M_PER_DEG,
            ..HOME
        };
        let a = render(HOME, 160, 120);
        let b = render(moved, 160, 120);
        let rows = |img: &RgbImage, from: u32, to: u32| {
            RgbImage::from_fn(160, to - from, |x, y| *img.get_pixel(x, y + from))
        };
        let shifted = mean_abs_difference(&rows(&a, 0, 100), &rows(&b, 10, 110));
        let unshifted = mean_abs_difference(&rows(&a, 0, 100), &rows(&b, 0, 100));
        assert!(shifted < 1.0, "shifted {shifted}");
        assert!(unshifted > shifted * 2.0, "{unshifted} vs {shifted}");
    }

    #[test]
    fn nonsense_poses_still_render() {
        let pose = Pose {
            latitude_deg: f64::NAN,
            longitude_deg: f64::INFINITY,
            height_m: -5.0,
            heading_deg: f64::NAN,
        };
        assert_eq!(render(pose, 8, 8).dimensions(), (8, 8));
    }
}
