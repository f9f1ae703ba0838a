use super::{generate, generate_empty, generate_sized};
use crate::synth::{Modality, SizeError, SynthSample};

fn small(seed: u64) -> SynthSample {
    generate_sized(seed, 320, 288).expect("size in range")
}

fn grey(sample: &SynthSample) -> Vec<u8> {
    sample.image.to_luma8().into_raw()
}

#[test]
fn same_seed_same_bytes_and_different_seeds_differ() {
    let (a, b, c) = (small(11), small(11), small(12));
    assert_eq!(a.image.as_bytes(), b.image.as_bytes());
    assert_eq!(a.mask, b.mask);
    assert_eq!(a.tags, b.tags);
    assert_ne!(a.image.as_bytes(), c.image.as_bytes());
    assert_eq!(
        generate_empty(5).image.as_bytes(),
        generate_empty(5).image.as_bytes()
    );
}

#[test]
fn full_size_sample_is_consistent() {
    let s = generate(3);
    let (w, h) = (s.image.width(), s.image.height());
    assert!((512..=1280).contains(&w) && (512..=1280).contains(&h));
    assert_eq!(s.mask.dimensions(), (w, h));
    assert!((1..=5).contains(&s.tags.spheroids));
    assert!(s.mask.pixels().any(|p| p.0[0] == 255));
}

#[test]
fn masks_are_binary_and_sized_like_the_image() {
    for seed in 0..12 {
        let s = generate_sized(seed, 200 + seed as u32 * 7, 150).expect("size in range");
        assert_eq!(s.mask.dimensions(), (s.image.width(), s.image.height()));
        assert!(s.mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        let bits = s.tags.bit_depth;
        assert!(bits == 8 || bits == 12 || bits == 16);
        assert_eq!(bits == 8, s.image.as_luma16().is_none());
    }
}

#[test]
fn empty_scenes_have_no_mask() {
    for seed in 0..4 {
        let s = generate_empty(seed);
        assert_eq!(s.tags.spheroids, 0);
        assert!(!s.tags.touching && !s.tags.cut_by_frame);
        assert!(s.mask.pixels().all(|p| p.0[0] == 0));
    }
}

#[test]
fn out_of_range_sizes_are_rejected() {
    let err = SizeError::OutOfRange {
        width: 10,
        height: 300,
    };
    assert_eq!(generate_sized(1, 10, 300).err(), Some(err));
    assert!(generate_sized(1, 300, 5000).is_err());
    assert!(generate_sized(1, 64, 64).is_ok());
}

#[test]
fn extreme_sizes_render() {
    for (seed, (w, h)) in [(64, 64), (64, 1500), (1500, 64), (64, 4096)]
        .into_iter()
        .enumerate()
    {
        for k in 0..3 {
            let s = generate_sized(seed as u64 * 10 + k, w, h).expect("size in range");
            assert_eq!(s.mask.dimensions(), (w, h));
        }
    }
}

#[test]
fn tag_rates_are_in_sensible_bands() {
    let tags: Vec<_> = (0..40).map(|seed| small(100 + seed).tags).collect();
    let count =
        |f: &dyn Fn(&crate::synth::SampleTags) -> bool| tags.iter().filter(|t| f(t)).count();
    let bf = count(&|t| t.modality == Modality::Brightfield);
    assert!((22..=36).contains(&bf), "brightfield {bf}/40");
    for (name, n) in [
        ("cell_cloud", count(&|t| t.cell_cloud)),
        ("bubble", count(&|t| t.bubble)),
        ("fibre", count(&|t| t.fibre)),
        ("halo+uneven", count(&|t| t.halo && t.uneven_illumination)),
        ("touching", count(&|t| t.touching)),
        ("cut_by_frame", count(&|t| t.cut_by_frame)),
    ] {
        assert!((2..=30).contains(&n), "{name}: {n}/40");
    }
}

#[test]
fn brightfield_spheroids_are_darker_than_the_background() {
    let mut checked = 0;
    for seed in 0..30 {
        let s = small(seed);
        if s.tags.modality != Modality::Brightfield {
            continue;
        }
        let (px, mask) = (grey(&s), s.mask.as_raw());
        let inside: Vec<f64> = px
            .iter()
            .zip(mask)
            .filter(|(_, m)| **m > 0)
            .map(|(p, _)| *p as f64)
            .collect();
        let mut outside: Vec<u8> = px
            .iter()
            .zip(mask)
            .filter(|(_, m)| **m == 0)
            .map(|(p, _)| *p)
            .collect();
        if inside.is_empty() || outside.is_empty() {
            continue;
        }
        outside.sort_unstable();
        let mean = inside.iter().sum::<f64>() / inside.len() as f64;
        let median = outside[outside.len() / 2] as f64;
        assert!(
            mean < median,
            "seed {seed}: inside {mean:.1} vs background {median}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} brightfield samples");
}
