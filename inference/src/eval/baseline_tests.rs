//! The Otsu baseline against synthetic ground truth: it should be good on easy samples and clearly worse on hard
//! ones, which is the gap a learned model has to close.

use image::GrayImage;

use super::{otsu_foreground, PairScores, ScoreAccumulator};
use crate::synth;

/// 3x3 binary erosion (`min`) or dilation (`max`), treating pixels outside the image as background.
fn morph3(mask: &GrayImage, dilate: bool) -> GrayImage {
    let (w, h) = mask.dimensions();
    GrayImage::from_fn(w, h, |x, y| {
        let mut hit = !dilate;
        for dy in -1i64..=1 {
            for dx in -1i64..=1 {
                let (nx, ny) = (i64::from(x) + dx, i64::from(y) + dy);
                let inside = nx >= 0 && ny >= 0 && nx < i64::from(w) && ny < i64::from(h);
                let on = inside && mask.get_pixel(nx as u32, ny as u32)[0] != 0;
                hit = if dilate { hit || on } else { hit && on };
            }
        }
        image::Luma([if hit { 255 } else { 0 }])
    })
}

/// Drops 4-connected components smaller than `min_area` pixels.
fn drop_small(mask: &mut GrayImage, min_area: usize) {
    let (w, h) = (mask.width() as usize, mask.height() as usize);
    let mut seen = vec![false; w * h];
    let mut stack = Vec::new();
    for start in 0..w * h {
        if seen[start] || mask.as_raw()[start] == 0 {
            continue;
        }
        let mut component = vec![start];
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            let neighbours = [
                (x > 0, i.wrapping_sub(1)),
                (x + 1 < w, i + 1),
                (y > 0, i.wrapping_sub(w)),
                (y + 1 < h, i + w),
            ];
            for (ok, j) in neighbours {
                if ok && !seen[j] && mask.as_raw()[j] != 0 {
                    seen[j] = true;
                    stack.push(j);
                    component.push(j);
                }
            }
        }
        if component.len() < min_area {
            let raw: &mut [u8] = mask;
            component.iter().for_each(|&i| raw[i] = 0);
        }
    }
}

/// Baseline as the caller post-processes it: Otsu, 3x3 open, 3x3 close, components under 0.1 % of the image
/// dropped.
fn baseline(image: &image::DynamicImage) -> GrayImage {
    let raw = otsu_foreground(image);
    let opened = morph3(&morph3(&raw, false), true);
    let mut closed = morph3(&morph3(&opened, true), false);
    let min_area = (closed.len() / 1000).max(16);
    drop_small(&mut closed, min_area);
    closed
}

/// Baseline scores on `count` easy and `count` hard samples at `side` x `side` (0 = native size), with each
/// sample's tags.
fn score(count: usize, side: u32) -> (ScoreAccumulator, Vec<(synth::SampleTags, f64)>) {
    let mut acc = ScoreAccumulator::new();
    let mut per_sample = Vec::new();
    let (mut easy, mut hard) = (0, 0);
    for seed in 0u64.. {
        if easy >= count && hard >= count {
            break;
        }
        let sample = if side == 0 {
            synth::generate(seed)
        } else {
            synth::generate_sized(seed, side, side).expect("valid size")
        };
        let is_hard = sample.tags.is_hard();
        if (is_hard && hard >= count) || (!is_hard && easy >= count) {
            continue;
        }
        *(if is_hard { &mut hard } else { &mut easy }) += 1;
        let pred = baseline(&sample.image);
        let scores = PairScores::of(pred.as_raw(), sample.mask.as_raw(), pred.width());
        acc.push(scores, is_hard);
        per_sample.push((sample.tags, scores.iou));
    }
    (acc, per_sample)
}

#[test]
fn baseline_is_good_on_easy_and_worse_on_hard() {
    let (acc, _) = score(8, 256);
    let (easy, hard) = (acc.easy(), acc.hard());
    assert!(easy.iou > 0.8, "easy {easy:?}");
    assert!(hard.iou + 0.1 < easy.iou, "easy {easy:?} hard {hard:?}");
}

/// Prints the baseline's scores on 50 easy and 50 hard native-size samples, overall and per condition:
/// `cargo test --release -- --ignored --nocapture baseline_report`.
#[test]
#[ignore = "slow report; run by hand"]
fn baseline_report() {
    let (acc, per_sample) = score(50, 0);
    println!(
        "easy {:?}\nhard {:?}\nall  {:?}",
        acc.easy(),
        acc.hard(),
        acc.overall()
    );
    type Condition = fn(&synth::SampleTags) -> bool;
    let conditions: [(&str, Condition); 7] = [
        ("uneven", |t| t.uneven_illumination),
        ("halo", |t| t.halo),
        ("debris", |t| t.debris),
        ("touching", |t| t.touching),
        ("cut", |t| t.cut_by_frame),
        ("brightfield", |t| {
            t.modality == synth::Modality::Brightfield
        }),
        ("fluorescence", |t| {
            t.modality == synth::Modality::Fluorescence
        }),
    ];
    for (name, holds) in conditions {
        let scores: Vec<f64> = per_sample
            .iter()
            .filter(|(t, _)| holds(t))
            .map(|(_, iou)| *iou)
            .collect();
        let mean = scores.iter().sum::<f64>() / scores.len().max(1) as f64;
        println!("{name:>12}: n={:3} mean IoU {mean:.3}", scores.len());
    }
}
