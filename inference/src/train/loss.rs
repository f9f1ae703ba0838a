//! Segmentation loss: binary cross-entropy on logits plus soft Dice
//! (Milletari et al., "V-Net", 2016), which weighs the boundary of small
//! spheroids as much as the large background.

use candle_core::{Result, Tensor};

/// Numerically stable BCE with logits: `relu(x) - x*t + log(1 + exp(-|x|))`
/// (candle's own computes `log(sigmoid(x))`, which is -inf for large |x|).
pub(crate) fn bce_with_logits(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let loss =
        ((logits.relu()? - (logits * target)?)? + (logits.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    loss.mean_all()
}

/// `1 - 2 sum(p t) / (sum p + sum t)` per image, averaged over the batch.
pub(crate) fn soft_dice(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    let p = candle_nn::ops::sigmoid(logits)?.flatten_from(1)?;
    let t = target.flatten_from(1)?;
    let inter = (&p * &t)?.sum(1)?;
    let denom = ((p.sum(1)? + t.sum(1)?)? + 1.0)?;
    let dice = ((inter * 2.0)? + 1.0)?.div(&denom)?;
    (dice.neg()? + 1.0)?.mean_all()
}

/// The training objective: BCE + Dice.
pub(crate) fn segmentation_loss(logits: &Tensor, target: &Tensor) -> Result<Tensor> {
    bce_with_logits(logits, target)? + soft_dice(logits, target)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn bce_is_finite_for_huge_logits_and_matches_the_formula() {
        let x = Tensor::new(&[[-200f32, 0.0, 200.0]], &Device::Cpu).unwrap();
        let t = Tensor::new(&[[0f32, 1.0, 1.0]], &Device::Cpu).unwrap();
        let l: f32 = bce_with_logits(&x, &t).unwrap().to_scalar().unwrap();
        assert!((l - (2f32.ln() / 3.0)).abs() < 1e-6, "{l}");
    }

    #[test]
    fn dice_is_zero_for_a_confident_perfect_prediction() {
        let t = Tensor::new(&[[1f32, 0.0, 1.0, 0.0]], &Device::Cpu).unwrap();
        let x = ((&t * 40.0).unwrap() - 20.0).unwrap();
        let d: f32 = soft_dice(&x, &t).unwrap().to_scalar().unwrap();
        assert!(d < 1e-3, "{d}");
    }
}
