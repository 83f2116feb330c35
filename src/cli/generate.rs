//! `latentlab generate`.

use std::path::PathBuf;

use latentlab::models::generate::{generate, GenerateConfig};
use latentlab::models::{HfTokenizer, Pretrained};
use latentlab::Device;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A Hugging Face model folder (config.json + *.safetensors): GPT-NeoX/Pythia or Qwen2.
    #[arg(long)]
    model: PathBuf,
    /// Prompt token ids, comma-separated (e.g. 1,2,3).
    #[arg(long, value_delimiter = ',', required_unless_present = "prompt", conflicts_with = "prompt")]
    prompt_ids: Vec<u32>,
    /// Prompt text, encoded with the folder's tokenizer.json; the continuation is printed decoded too.
    #[arg(long)]
    prompt: Option<String>,
    /// New tokens to generate.
    #[arg(long, default_value_t = 16)]
    max_new: usize,
    /// 0 = greedy; otherwise sample from softmax(logits / T).
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Seed of the sampling stream.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop after this token id (e.g. the EOS id).
    #[arg(long)]
    stop_token: Option<u32>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.temperature >= 0.0, "--temperature: expected ≥ 0, got {}", args.temperature);
    let model = Pretrained::load(&args.model, &Device::Cpu)?;
    let cfg = GenerateConfig { max_new: args.max_new, temperature: args.temperature, seed: args.seed, stop_token: args.stop_token };
    let tokenizer = match &args.prompt {
        Some(_) => Some(HfTokenizer::load(&args.model)?),
        None => None,
    };
    let prompt = match (&args.prompt, &tokenizer) {
        (Some(text), Some(tok)) => tok.encode(text)?,
        _ => args.prompt_ids.clone(),
    };
    let ids = generate(&model, &prompt, &cfg)?;
    let list: Vec<String> = ids.iter().map(|t| t.to_string()).collect();
    println!("{}", list.join(","));
    if let Some(tok) = &tokenizer {
        println!("{}", tok.decode(&ids)?);
    }
    Ok(())
}
