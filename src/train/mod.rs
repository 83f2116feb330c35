//! The one training loop, optimizers, schedules, checkpoints and the metrics
//! log. Experiments plug in through the `Task` trait; nothing else steps an
//! optimizer. May import `nn`, `models`, `data`; never `surgery`, `interp`
//! analyses or `report`.

pub mod bench;
pub mod bench_forward;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod lm_task;
pub mod metrics;
pub mod optim;
pub mod run;
pub mod run_config;
pub mod shards;

pub use checkpoint::Checkpoint;
pub use config::{DecayTrigger, OptimizerKind, ScheduleKind, TrainConfig};
pub use error::TrainError;
pub use metrics::{Metrics, MetricsSink};
pub use optim::Optimizer;
pub use run::{run, RunOptions, Task, TrainSummary};
pub use run_config::{RunConfig, TaskConfig, TaskKind};
