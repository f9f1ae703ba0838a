//! The SpherosegV4 ResUNet, layer for layer: a U-Net (Ronneberger et al.,
//! 2015) with residual SE blocks and attention-gated skips, named exactly like
//! the PyTorch `ResUNet` so its `state_dict` loads unchanged:
//! `downs.{i}`, `bottleneck`, `ups.{2k}` (ConvTranspose2d), `ups.{2k+1}`
//! (ResidualBlock), `attentions.{k}`, `final_conv`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::config::ResUNetConfig;
use super::layers::{concat_channels, AttentionGate, Conv, ResidualBlock, UpConv};

/// The network; `forward` maps `[B,3,S,S]` in `[0,1]` to `[B,1,S,S]` logits.
#[derive(Debug, Clone)]
pub(crate) struct ResUNet {
    downs: Vec<ResidualBlock>,
    bottleneck: ResidualBlock,
    ups: Vec<(UpConv, AttentionGate, ResidualBlock)>,
    final_conv: Conv,
}

impl ResUNet {
    /// Builds the network from `vb` (checkpoint tensors, or a `VarMap` to train).
    pub(crate) fn new(vb: &VarBuilder, cfg: &ResUNetConfig) -> Result<Self> {
        let hidden = |c: usize| c / cfg.se_reduction;
        let block = |vb: VarBuilder, i: usize, o: usize| {
            ResidualBlock::new(&vb, i, o, cfg.gn_groups, hidden(o))
        };
        let mut downs = Vec::with_capacity(cfg.features.len());
        let mut c = cfg.in_channels;
        for (i, &f) in cfg.features.iter().enumerate() {
            downs.push(block(vb.pp("downs").pp(i), c, f)?);
            c = f;
        }
        let bottleneck = block(vb.pp("bottleneck"), c, 2 * c)?;
        let mut ups = Vec::with_capacity(cfg.features.len());
        for (k, &f) in cfg.features.iter().rev().enumerate() {
            let up = UpConv::new(&vb.pp("ups").pp(2 * k), 2 * f, f)?;
            let gate = AttentionGate::new(&vb.pp("attentions").pp(k), f)?;
            let res = block(vb.pp("ups").pp(2 * k + 1), 2 * f, f)?;
            ups.push((up, gate, res));
        }
        let final_conv = Conv::new(
            &vb.pp("final_conv"),
            cfg.features[0],
            cfg.out_channels,
            1,
            true,
        )?;
        Ok(Self {
            downs,
            bottleneck,
            ups,
            final_conv,
        })
    }
}

impl Module for ResUNet {
    /// Every activation is released right after its last consumer: a skip
    /// once its gate ran, the gate output and the upsampled signal once
    /// concatenated. At a 1024 input the top level's activations are 268 MB
    /// each, so this ordering, not the arithmetic, sets the peak memory.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut skips = Vec::with_capacity(self.downs.len());
        let mut x = x.clone();
        for down in &self.downs {
            x = down.forward_owned(x)?;
            skips.push(x.clone());
            x = x.max_pool2d(2)?;
        }
        x = self.bottleneck.forward_owned(x)?;
        for (up, gate, res) in &self.ups {
            let skip = skips
                .pop()
                .ok_or_else(|| candle_core::Error::Msg("ResUNet: fewer skips than ups".into()))?;
            let upsampled = up.forward(&x)?;
            drop(x);
            let gated = gate.forward(&upsampled, &skip)?;
            drop(skip);
            let joined = concat_channels(&gated, &upsampled)?;
            drop((gated, upsampled));
            x = res.forward_owned(joined)?;
        }
        self.final_conv.forward(&x)
    }
}
