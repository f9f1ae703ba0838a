//! Tests of the synthetic generator: determinism, sizes, masks, tag frequencies, plus hand-run gallery and timing.

use image::DynamicImage;
use proptest::prelude::*;

use super::*;

#[test]
fn same_seed_same_bytes() {
    for seed in [0, 1, 99] {
        let a = generate_sized(seed, 200, 150).unwrap();
        let b = generate_sized(seed, 200, 150).unwrap();
        assert_eq!(a.image.as_bytes(), b.image.as_bytes());
        assert_eq!(a.mask.as_raw(), b.mask.as_raw());
        assert_eq!(a.tags, b.tags);
    }
    let (a, b) = (generate(5), generate(5));
    assert_eq!(a.image.as_bytes(), b.image.as_bytes());
    assert_eq!(a.mask.as_raw(), b.mask.as_raw());
    assert_ne!(generate(6).image.as_bytes(), a.image.as_bytes());
}

/// Rendering splits rows across rayon's workers; a single-thread pool must give the same bytes.
#[test]
fn thread_count_does_not_change_output() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let single = pool.install(|| generate_sized(11, 300, 220).unwrap());
    let shared = generate_sized(11, 300, 220).unwrap();
    assert_eq!(single.image.as_bytes(), shared.image.as_bytes());
    assert_eq!(single.mask.as_raw(), shared.mask.as_raw());
}

#[test]
fn native_sizes_in_range_and_masks_binary() {
    for seed in 0..6 {
        let sample = generate(seed);
        let (w, h) = sample.mask.dimensions();
        let (long, short) = (w.max(h), w.min(h));
        assert!(
            (512..=1300).contains(&long) && (512..=1000).contains(&short),
            "{w}x{h}"
        );
        assert_eq!((sample.image.width(), sample.image.height()), (w, h));
        assert!(sample.mask.iter().all(|&v| v == 0 || v == 255));
        let depth_ok = matches!(
            (&sample.image, sample.tags.bit_depth),
            (DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_), 8)
                | (DynamicImage::ImageLuma16(_), 12 | 16)
        );
        assert!(
            depth_ok,
            "{:?} tagged {} bits",
            sample.image.color(),
            sample.tags.bit_depth
        );
    }
}

#[test]
fn rejects_bad_sizes() {
    assert_eq!(
        generate_sized(0, 10, 500).unwrap_err(),
        SizeError::OutOfRange {
            width: 10,
            height: 500
        }
    );
    assert!(matches!(
        generate_sized(0, 500, MAX_SIDE + 1),
        Err(SizeError::OutOfRange { .. })
    ));
}

/// Tag frequencies over 200 seeds at a small size (the scene distribution does not depend on the size).
#[test]
fn tag_frequencies_match_the_design() {
    let n = 200;
    let (mut hard, mut bright, mut non_empty, mut cut, mut multi) = (0, 0, 0, 0, 0);
    let (mut cloud, mut bubble, mut fibre) = (0, 0, 0);
    for seed in 0..n {
        let sample = generate_sized(seed, 128, 128).unwrap();
        let t = sample.tags;
        hard += usize::from(t.is_hard());
        cloud += usize::from(t.cell_cloud);
        bubble += usize::from(t.bubble);
        fibre += usize::from(t.fibre);
        bright += usize::from(t.modality == Modality::Brightfield);
        cut += usize::from(t.cut_by_frame);
        multi += usize::from(t.spheroids > 1);
        let area = sample.mask.iter().filter(|&&v| v != 0).count();
        non_empty += usize::from(area > 128 * 128 / 100);
        assert!(t.spheroids >= 1);
    }
    let share = |k: usize| k as f64 / n as f64;
    // v1's difficulties on about half the samples, v2's cloud, bubble and fibre on top.
    assert!((0.7..=0.92).contains(&share(hard)), "hard {hard}/{n}");
    assert!((0.15..=0.45).contains(&share(cloud)), "cloud {cloud}/{n}");
    assert!((0.1..=0.35).contains(&share(bubble)), "bubble {bubble}/{n}");
    assert!((0.15..=0.45).contains(&share(fibre)), "fibre {fibre}/{n}");
    assert!(
        (0.65..=0.85).contains(&share(bright)),
        "brightfield {bright}/{n}"
    );
    assert!(share(non_empty) > 0.95, "non-empty masks {non_empty}/{n}");
    assert!((0.15..=0.6).contains(&share(cut)), "cut by frame {cut}/{n}");
    assert!(
        (0.25..=0.6).contains(&share(multi)),
        "several spheroids {multi}/{n}"
    );
}

#[test]
fn hard_tag_definition() {
    let easy = SampleTags {
        modality: Modality::Brightfield,
        bit_depth: 8,
        uneven_illumination: false,
        halo: false,
        debris: false,
        touching: false,
        cut_by_frame: true,
        spheroids: 1,
        cell_cloud: false,
        bubble: false,
        fibre: false,
    };
    assert!(!easy.is_hard());
    assert!(SampleTags { halo: true, ..easy }.is_hard());
    assert!(SampleTags {
        touching: true,
        ..easy
    }
    .is_hard());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// Any seed and size in range gives a sample of that size whose mask is 0/255.
    #[test]
    fn any_seed_and_size(seed in any::<u64>(), w in MIN_SIDE..200u32, h in MIN_SIDE..200u32) {
        let sample = generate_sized(seed, w, h).unwrap();
        prop_assert_eq!(sample.mask.dimensions(), (w, h));
        prop_assert_eq!((sample.image.width(), sample.image.height()), (w, h));
        prop_assert!(sample.mask.iter().all(|&v| v == 0 || v == 255));
    }
}

/// Writes a gallery to /tmp/synth_samples for visual inspection:
/// `cargo test --release -- --ignored write_gallery`.
#[test]
#[ignore = "writes files; run by hand to look at samples"]
fn write_gallery() {
    let dir = std::path::Path::new("/tmp/synth_samples");
    std::fs::create_dir_all(dir).unwrap();
    let count: u64 = std::env::var("SYNTH_GALLERY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    for seed in 0..count {
        let t = std::time::Instant::now();
        let sample = if seed % 6 == 5 {
            generate_empty(seed)
        } else {
            generate(seed)
        };
        let elapsed = t.elapsed();
        let tags = sample.tags;
        let name = format!(
            "{seed:03}_{}_{}b{}{}{}{}{}{}{}{}{}",
            if tags.modality == Modality::Brightfield {
                "bf"
            } else {
                "fl"
            },
            tags.bit_depth,
            if tags.uneven_illumination {
                "_uneven"
            } else {
                ""
            },
            if tags.halo { "_halo" } else { "" },
            if tags.debris { "_debris" } else { "" },
            if tags.touching { "_touch" } else { "" },
            if tags.cut_by_frame { "_cut" } else { "" },
            if tags.cell_cloud { "_cloud" } else { "" },
            if tags.bubble { "_bubble" } else { "" },
            if tags.fibre { "_fibre" } else { "" },
            if tags.spheroids == 0 { "_empty" } else { "" },
        );
        // 12-bit data would look black as a raw 16-bit PNG; stretch it as the baseline does.
        let img = match &sample.image {
            DynamicImage::ImageLuma16(_) => {
                DynamicImage::ImageLuma8(crate::eval::to_grey8(&sample.image))
            }
            other => other.clone(),
        };
        img.save(dir.join(format!("{name}.png"))).unwrap();
        sample
            .mask
            .save(dir.join(format!("{name}_mask.png")))
            .unwrap();
        println!("{name} {:?} {:?}", sample.image.color(), elapsed);
    }
}

/// Process CPU time (user + system) from `/proc/self/stat`, in seconds; `None` off Linux.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (1-based).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Times 1024x1024 generation, wall and CPU (the CPU figure is what one free core would take):
/// `RAYON_NUM_THREADS=1 cargo test --release -- --ignored --nocapture timing`.
#[test]
#[ignore = "timing; run by hand in release"]
fn timing() {
    let runs = 40u64;
    let cpu0 = cpu_seconds();
    let start = std::time::Instant::now();
    for seed in 0..runs {
        std::hint::black_box(generate_sized(seed, 1024, 1024).unwrap());
    }
    let wall = start.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let cpu = cpu_seconds()
        .zip(cpu0)
        .map(|(b, a)| (b - a) * 1e3 / runs as f64);
    println!(
        "1024x1024 on {} threads: {wall:.1} ms wall, {cpu:.1?} ms CPU per sample",
        rayon::current_num_threads()
    );
}

#[test]
fn v1_stays_what_it_was_and_v2_adds_to_it() {
    for seed in [3, 8, 21] {
        let v1 = generate_with(Generator::V1, seed);
        let tags = v1.tags;
        assert!(!(tags.cell_cloud || tags.bubble || tags.fibre));
        let v2 = generate(seed);
        // Same v1 scene underneath: size, modality and the spheroids' mask are shared.
        assert_eq!(
            (v1.image.width(), v1.image.height()),
            (v2.image.width(), v2.image.height())
        );
        assert_eq!(v1.tags.modality, v2.tags.modality);
        assert_eq!(v1.mask.as_raw(), v2.mask.as_raw());
        assert_ne!(v1.image.as_bytes(), v2.image.as_bytes());
    }
}

#[test]
fn empty_scenes_have_no_spheroid_and_generate_always_has_one() {
    for seed in 0..12 {
        let empty = generate_empty(seed);
        assert_eq!(empty.tags.spheroids, 0);
        assert!(empty.mask.iter().all(|&v| v == 0));
        let t = empty.tags;
        assert!(t.cell_cloud || t.bubble || t.fibre, "seed {seed}: {t:?}");
        assert!(generate(seed).tags.spheroids >= 1);
    }
    let pool_empties = (0..80u64)
        .filter(|&seed| generate_with(Generator::V2, seed).tags.spheroids == 0)
        .count();
    assert!(
        (1..=14).contains(&pool_empties),
        "{pool_empties}/80 empty v2 draws"
    );
}
