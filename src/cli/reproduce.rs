//! `latentlab reproduce <study>`.

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Study name, or `list`.
    study: String,
    /// A smaller, faster version (for tests and smoke runs).
    #[arg(long)]
    quick: bool,
}

const STUDIES: &[(&str, &str)] = &[
    ("truncation", "noisy in-context recall; FFN vs attention; weight truncation (arXiv 2406.03068) — in progress"),
    ("recursive", "recursive latent reasoning on computation graphs (arXiv 2510.14095) — not yet implemented"),
    ("vae-rules", "language-VAE reasoning rules (arXiv 2506.19418) — not yet implemented"),
];

pub fn run(args: Args) -> anyhow::Result<()> {
    let _ = args.quick;
    match args.study.as_str() {
        "list" => {
            for (name, what) in STUDIES {
                println!("{name:<12} {what}");
            }
            Ok(())
        }
        other => {
            let names: Vec<&str> = STUDIES.iter().map(|s| s.0).collect();
            Err(super::UsageError(format!(
                "study `{other}` is not available yet; studies: {} (see `latentlab reproduce list`)",
                names.join(", ")
            ))
            .into())
        }
    }
}
