//! The goal check and the live monitor against keep-in polygon size (4 to 1,024 vertices).
//! Run: `cargo bench --bench envelope`; figures in BENCHMARKS.md.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flight_companion::config::{EnvelopeConfig, ZoneConfig};
use flight_companion::safety::envelope::{Envelope, FixType, GoalRequest};
use flight_companion::safety::geo::{GeoPosition, LocalFrame, LocalPoint};
use flight_companion::safety::{Landed, VehicleView};

const HOME: GeoPosition = GeoPosition {
    latitude_deg: 47.397742,
    longitude_deg: 8.545594,
    altitude_m: 0.0,
};

/// A regular-ish polygon of `n` vertices, radius 250 m, with a gentle wobble so it is not convex.
fn envelope(n: usize) -> Envelope {
    let frame = LocalFrame::new(HOME.point()).unwrap();
    let vertices = (0..n)
        .map(|i| {
            let a = i as f64 / n as f64 * std::f64::consts::TAU;
            let r = 250.0 + if i % 2 == 0 { 0.0 } else { 5.0 };
            let g = frame.to_geo(LocalPoint::new(r * a.cos(), r * a.sin()));
            [g.latitude_deg, g.longitude_deg]
        })
        .collect();
    let config = EnvelopeConfig {
        keep_in: vec![ZoneConfig {
            name: "field".into(),
            polygon_lat_lon_deg: Some(vertices),
            center_lat_lon_deg: None,
            radius_m: None,
        }],
        ..EnvelopeConfig::default()
    };
    Envelope::new(&config, HOME, None).unwrap()
}

fn at(east: f64, north: f64, alt: f64) -> GeoPosition {
    let g = LocalFrame::new(HOME.point())
        .unwrap()
        .to_geo(LocalPoint::new(east, north));
    GeoPosition {
        latitude_deg: g.latitude_deg,
        longitude_deg: g.longitude_deg,
        altitude_m: alt,
    }
}

fn bench(c: &mut Criterion) {
    let facts = VehicleView {
        position: Some(at(-100.0, -50.0, 20.0)),
        velocity_ned_m_s: [0.0; 3],
        battery_remaining_percent: Some(90.0),
        gps_fix_type: FixType::Fix3d,
        satellites_visible: 12,
        hdop: Some(0.8),
        position_valid: true,
        armed: true,
        landed: Landed::InAir,
        ..VehicleView::UNKNOWN
    };
    let goal = GoalRequest {
        from: at(-100.0, -50.0, 20.0),
        to: at(120.0, 80.0, 30.0),
        speed_m_s: Some(4.0),
    };
    let mut group = c.benchmark_group("envelope");
    for n in [4usize, 16, 64, 128, 256, 1024] {
        let env = envelope(n);
        assert!(env.check_goal(&goal, &facts).is_allowed());
        group.bench_with_input(BenchmarkId::new("check_goal", n), &env, |b, env| {
            b.iter(|| env.check_goal(black_box(&goal), black_box(&facts)))
        });
        group.bench_with_input(BenchmarkId::new("monitor", n), &env, |b, env| {
            b.iter(|| env.monitor(black_box(&facts)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
