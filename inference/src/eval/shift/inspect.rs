//! Ignored helpers for looking at the renderer: preview PNGs, tag rates and render time.
//! `cargo test --release -p spheromesh-inference --lib eval::shift::inspect -- --ignored --nocapture`

use super::{generate, generate_empty, generate_sized};
use crate::synth::{Modality, SynthSample};

/// Writes preview PNGs with the mask outline in red: `cargo test --release -p spheromesh-inference --lib
/// eval::shift::inspect::preview -- --ignored`.
#[test]
#[ignore]
fn preview() {
    let dir = std::path::Path::new("/tmp/shift_preview");
    std::fs::create_dir_all(dir).expect("create preview dir");
    let mut picks: Vec<(String, SynthSample)> = Vec::new();
    let want =
        |name: &str, ok: &dyn Fn(&SynthSample) -> bool, picks: &mut Vec<(String, SynthSample)>| {
            let s = (0..200)
                .map(generate)
                .find(|s| ok(s) && picks.iter().all(|(_, p)| p.image != s.image));
            picks.push((name.to_string(), s.expect("a matching seed")));
        };
    let bf = |s: &SynthSample| s.tags.modality == Modality::Brightfield;
    want(
        "bf_halo_gradient",
        &|s| bf(s) && s.tags.halo && s.tags.uneven_illumination,
        &mut picks,
    );
    want("bf_cloud", &|s| bf(s) && s.tags.cell_cloud, &mut picks);
    want(
        "bf_touching",
        &|s| bf(s) && s.tags.touching && !s.tags.halo,
        &mut picks,
    );
    want("fluorescence", &|s| !bf(s), &mut picks);
    want(
        "bf_bubble_fibre",
        &|s| bf(s) && (s.tags.bubble || s.tags.fibre),
        &mut picks,
    );
    picks.push(("empty".to_string(), generate_empty(4)));
    for (name, s) in &picks {
        // Stretch 12-bit data to full range so it is visible.
        let shown = match (&s.image, s.tags.bit_depth) {
            (image::DynamicImage::ImageLuma16(g), 12) => {
                let data = g.as_raw().iter().map(|v| (*v >> 4) as u8).collect();
                image::DynamicImage::ImageLuma8(
                    image::GrayImage::from_raw(g.width(), g.height(), data).expect("size"),
                )
            }
            (img, _) => img.clone(),
        };
        let mut rgb = shown.to_rgb8();
        let (w, h) = s.mask.dimensions();
        let m = |x: u32, y: u32| s.mask.get_pixel(x.min(w - 1), y.min(h - 1)).0[0] > 0;
        for y in 0..h {
            for x in 0..w {
                let edge = m(x, y)
                    && (x == 0
                        || y == 0
                        || !m(x - 1, y)
                        || !m(x + 1, y)
                        || !m(x, y - 1)
                        || !m(x, y + 1));
                if edge {
                    rgb.put_pixel(x, y, image::Rgb([255, 0, 0]));
                }
            }
        }
        rgb.save(dir.join(format!("{name}.png")))
            .expect("write preview");
        s.image
            .to_rgb8()
            .save(dir.join(format!("{name}_raw.png")))
            .expect("write preview");
        println!("{name}: {:?}", s.tags);
    }
}

/// Tag rates over 200 seeds and the single-thread render time at 1024x1024.
#[test]
#[ignore]
fn stats() {
    let samples: Vec<_> = (0..200).map(generate).collect();
    let rgb = samples
        .iter()
        .filter(|s| s.image.as_rgb8().is_some())
        .count();
    println!("rgb8 {}%", rgb as f64 / 2.0);
    let tags: Vec<_> = samples.into_iter().map(|s| s.tags).collect();
    let rate = |f: &dyn Fn(&crate::synth::SampleTags) -> bool| {
        tags.iter().filter(|t| f(t)).count() as f64 / 2.0
    };
    println!(
        "brightfield {}%",
        rate(&|t| t.modality == Modality::Brightfield)
    );
    println!(
        "halo {}% uneven {}%",
        rate(&|t| t.halo),
        rate(&|t| t.uneven_illumination)
    );
    println!(
        "bf halo+uneven {}% (of all)",
        rate(&|t| t.modality == Modality::Brightfield && t.halo && t.uneven_illumination)
    );
    println!(
        "debris {}% touching {}% cut {}%",
        rate(&|t| t.debris),
        rate(&|t| t.touching),
        rate(&|t| t.cut_by_frame)
    );
    println!(
        "cloud {}% bubble {}% fibre {}%",
        rate(&|t| t.cell_cloud),
        rate(&|t| t.bubble),
        rate(&|t| t.fibre)
    );
    println!("12/16-bit {}%", rate(&|t| t.bit_depth > 8));
    for n in 0..=5 {
        println!("spheroids={n}: {}%", rate(&|t| t.spheroids == n));
    }
    let empty: Vec<_> = (0..50).map(|seed| generate_empty(seed).tags).collect();
    let share =
        |f: &dyn Fn(&crate::synth::SampleTags) -> bool| empty.iter().filter(|t| f(t)).count() * 2;
    println!(
        "empty: cloud {}% bubble {}% fibre {}% debris {}%",
        share(&|t| t.cell_cloud),
        share(&|t| t.bubble),
        share(&|t| t.fibre),
        share(&|t| t.debris)
    );
    let mut times: Vec<f64> = (0..20)
        .map(|seed| {
            let start = std::time::Instant::now();
            std::hint::black_box(generate_sized(seed, 1024, 1024).expect("size"));
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    println!(
        "1024x1024: mean {mean:.1} ms, median {:.1} ms, max {:.1} ms",
        times[10], times[19]
    );
}
