//! `latentlab logits`: logits and hook activations of a prompt to a `.safetensors` file.

use std::path::PathBuf;

use latentlab::interp::HookPoint;
use latentlab::models::export::{logits_and_hooks, save_atomic};
use latentlab::models::{HfTokenizer, Pretrained};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hugging Face model folder (config.json + *.safetensors): GPT-NeoX/Pythia or Qwen2.
    #[arg(long)]
    model: PathBuf,
    /// Prompt token ids, comma-separated (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',', required_unless_present = "prompt", conflicts_with = "prompt")]
    prompt_ids: Vec<u32>,
    /// Prompt text, encoded with the folder's tokenizer.json.
    #[arg(long)]
    prompt: Option<String>,
    /// Output file (`input_ids`, `logits`, one tensor per hook).
    #[arg(long)]
    out: PathBuf,
    /// Also save the activation at this hook point, e.g. blocks.0.hook_resid_post (repeatable).
    #[arg(long = "hook")]
    hooks: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let hooks = args.hooks.iter().map(|h| h.parse::<HookPoint>()).collect::<Result<Vec<_>, _>>()?;
    let model = Pretrained::load(&args.model, &latentlab::Device::Cpu)?;
    let ids = match &args.prompt {
        Some(text) => HfTokenizer::load(&args.model)?.encode(text)?,
        None => args.prompt_ids.clone(),
    };
    let vocab = model.vocab_size() as u32;
    if let Some(bad) = ids.iter().find(|&&t| t >= vocab) {
        anyhow::bail!(super::UsageError(format!("--prompt-ids: token id {bad} is outside the vocabulary (size {vocab})")));
    }
    let tensors = logits_and_hooks(&model, &ids, &hooks)?;
    save_atomic(&tensors, &args.out)?;
    for (name, t) in &tensors {
        println!("{name}: {:?}", t.dims());
    }
    println!("wrote {}", args.out.display());
    Ok(())
}
