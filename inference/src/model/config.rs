//! Architecture hyper-parameters of the ResUNet.
//!
//! Widths come from the checkpoint's tensor shapes ([`crate::model::weights`]);
//! what shapes cannot tell (GroupNorm groups, network input size) comes from
//! safetensors metadata, defaulting to the old SpherosegV4 service's values.

use serde::{Deserialize, Serialize};

/// Hyper-parameters of a ResUNet (`ResUNet(in_channels, out_channels, features)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResUNetConfig {
    /// Input channels (3: RGB).
    pub in_channels: usize,
    /// Output channels (1: spheroid logit).
    pub out_channels: usize,
    /// Encoder widths; the bottleneck is twice the last one.
    pub features: Vec<usize>,
    /// GroupNorm group count in every residual block (the original uses 32).
    pub gn_groups: usize,
    /// Squeeze-and-excitation reduction ratio (hidden = width / ratio; original 16).
    pub se_reduction: usize,
    /// Side of the square network input in pixels (images are resized to it).
    pub input_size: usize,
}

impl Default for ResUNetConfig {
    /// The model the old SpherosegV4 service ran (132,238,512 parameters).
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 1,
            features: vec![64, 128, 256, 512, 1024],
            gn_groups: 32,
            se_reduction: 16,
            input_size: 1024,
        }
    }
}

/// A configuration rule that does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid ResUNet config: {0}")]
pub struct InvalidConfig(pub String);

impl ResUNetConfig {
    /// The small network spheromesh trains and ships (`models/`).
    pub fn shipped() -> Self {
        Self {
            features: vec![8, 16, 32, 64, 128],
            gn_groups: 4,
            se_reduction: 4,
            input_size: 256,
            ..Self::default()
        }
    }

    /// Checks the rules the network needs to be buildable.
    ///
    /// # Errors
    /// Names the first broken rule.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let fail = |m: String| Err(InvalidConfig(m));
        if self.features.is_empty() {
            return fail("features must not be empty".into());
        }
        if self.in_channels == 0 || self.out_channels == 0 {
            return fail("in_channels and out_channels must be positive".into());
        }
        for &f in &self.features {
            if f < 2 || f % 2 != 0 {
                return fail(format!("feature width {f} must be even and >= 2"));
            }
            if f % self.gn_groups != 0 || (2 * f) % self.gn_groups != 0 {
                return fail(format!(
                    "feature width {f} is not divisible by gn_groups {}",
                    self.gn_groups
                ));
            }
            if self.se_reduction == 0 || f / self.se_reduction == 0 {
                return fail(format!(
                    "se_reduction {} leaves no hidden unit for width {f}",
                    self.se_reduction
                ));
            }
        }
        let stride = 1usize << self.features.len();
        if self.input_size == 0 || !self.input_size.is_multiple_of(stride) {
            return fail(format!(
                "input_size {} must be a positive multiple of {stride}",
                self.input_size
            ));
        }
        Ok(())
    }

    /// Number of trainable parameters (BatchNorm running statistics excluded).
    pub fn parameter_count(&self) -> usize {
        let block = |i: usize, o: usize| {
            let se = 2 * o * (o / self.se_reduction);
            9 * i * o + 9 * o * o + 4 * o + if i != o { i * o } else { 0 } + se
        };
        let mut total = 0;
        let mut c = self.in_channels;
        for &f in &self.features {
            total += block(c, f);
            c = f;
        }
        let last = *self.features.last().unwrap_or(&0);
        total += block(last, 2 * last);
        for &f in self.features.iter().rev() {
            let half = f / 2;
            total += 2 * f * f * 4 + f; // ups.2k (ConvTranspose2d)
            total += block(2 * f, f); // ups.2k+1
            total += 2 * (f * half + half + 2 * half) + (half + 1 + 2); // attention gate
        }
        total + self.features[0] * self.out_channels + self.out_channels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_parameter_count_matches_the_contract() {
        assert_eq!(ResUNetConfig::default().parameter_count(), 132_238_512);
    }

    #[test]
    fn parameter_count_agrees_with_the_state_dict_table() {
        for cfg in [ResUNetConfig::default(), ResUNetConfig::shipped()] {
            let table: usize = super::super::weights::expected_shapes(&cfg)
                .iter()
                .filter(|(k, _)| !k.contains(".running_"))
                .map(|(_, s)| s.iter().product::<usize>())
                .sum();
            assert_eq!(cfg.parameter_count(), table);
        }
        assert_eq!(ResUNetConfig::shipped().parameter_count(), 2_111_012);
    }

    #[test]
    fn shipped_config_is_valid_and_bad_ones_name_the_rule() {
        ResUNetConfig::shipped().validate().unwrap();
        ResUNetConfig::default().validate().unwrap();
        let bad = ResUNetConfig {
            gn_groups: 3,
            ..ResUNetConfig::shipped()
        };
        assert!(bad.validate().unwrap_err().0.contains("gn_groups"));
        let bad = ResUNetConfig {
            input_size: 100,
            ..ResUNetConfig::shipped()
        };
        assert!(bad.validate().unwrap_err().0.contains("multiple of 32"));
    }
}
