//! `spheromesh train`: reproduce the shipped model from scratch.

use std::path::PathBuf;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use spheromesh_inference::train::{train, TrainConfig, TrainEvent};

/// Arguments of `spheromesh train`.
#[derive(Debug, clap::Args)]
pub(crate) struct TrainArgs {
    /// Output safetensors file.
    #[arg(long, default_value = super::SHIPPED_MODEL)]
    out: PathBuf,
    /// Optimiser steps (default: the shipped recipe).
    #[arg(long)]
    steps: Option<usize>,
    /// Synthetic samples rendered into the training pool.
    #[arg(long)]
    pool: Option<usize>,
    /// Images per step.
    #[arg(long)]
    batch: Option<usize>,
    /// Seed of weights and batch order.
    #[arg(long)]
    seed: Option<u64>,
    /// Network input side (multiple of 32).
    #[arg(long)]
    input_size: Option<usize>,
    /// Whole-image fine-tuning after the crop phase: cycle lengths in steps,
    /// comma separated (each restarts the cosine schedule).
    #[arg(long, value_delimiter = ',')]
    finetune_cycles: Option<Vec<usize>>,
    /// Continue from these weights instead of a seeded initialisation
    /// (e.g. `--init crop-phase.safetensors --steps 0` runs only the second phase).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Synthetic generator of the pool: v1 or v2.
    #[arg(long)]
    generator: Option<spheromesh_inference::synth::Generator>,
    /// First synthetic seed of the pool.
    #[arg(long)]
    data_seed: Option<u64>,
    /// Run the shipped recipe's second stage (generator v2, fresh pool, whole-image cycles) from the weights in
    /// `--init`; the other flags override its settings.
    #[arg(long, requires = "init")]
    v2_stage: bool,
    /// No-spheroid scenes added to the pool after its draws (generator v2 only).
    #[arg(long)]
    extra_empty: Option<usize>,
    /// Peak learning rate of the whole-image phase.
    #[arg(long)]
    finetune_lr: Option<f64>,
}

pub(crate) fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut cfg = match (&args.init, args.v2_stage) {
        (Some(init), true) => TrainConfig::shipped_v2(init.clone(), args.out.clone()),
        _ => TrainConfig::shipped(args.out.clone()),
    };
    if let Some(v) = args.steps {
        cfg.steps = v;
        cfg.warmup_steps = cfg.warmup_steps.min(v / 4).max(1);
    }
    if let Some(v) = args.finetune_cycles {
        cfg.finetune_cycles = v;
    }
    cfg.init = args.init.clone();
    if let Some(v) = args.generator {
        cfg.generator = v;
    }
    if let Some(v) = args.data_seed {
        cfg.data_seed = v;
    }
    if let Some(v) = args.pool {
        cfg.pool_size = v;
    }
    if let Some(v) = args.extra_empty {
        cfg.extra_empty = v;
    }
    if let Some(v) = args.finetune_lr {
        cfg.finetune_learning_rate = v;
    }
    if let Some(v) = args.batch {
        cfg.batch_size = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.input_size {
        cfg.model.input_size = v;
    }
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    tracing::info!(?cfg, "training");
    let pool_bar = ProgressBar::new(cfg.pool_len() as u64)
        .with_style(style("rendering pool"))
        .with_message("");
    let step_bar = ProgressBar::hidden();
    step_bar.set_length((cfg.steps + cfg.finetune_steps()) as u64);
    let report = train(&cfg, &|event| match event {
        TrainEvent::Pool { done, .. } => pool_bar.set_position(done as u64),
        TrainEvent::Step { step, loss, lr, .. } => {
            if step == 1 {
                pool_bar.finish();
                step_bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                step_bar.set_style(style("training"));
            }
            step_bar.set_position(step as u64);
            if step % 50 == 0 {
                tracing::info!(step, loss, lr, "training");
            }
            step_bar.set_message(format!("loss {loss:.4} lr {lr:.2e}"));
        }
        TrainEvent::Checkpoint { step } => tracing::info!(step, "checkpoint written"),
        _ => {}
    })?;
    step_bar.finish();
    println!(
        "wrote {} (final loss {:.4}; pool {:.0} s, training {:.0} s)",
        cfg.output.display(),
        report.final_loss,
        report.pool_time.as_secs_f64(),
        report.train_time.as_secs_f64()
    );
    Ok(())
}

fn style(prefix: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{prefix} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} (eta {{eta}}) {{msg}}"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}
