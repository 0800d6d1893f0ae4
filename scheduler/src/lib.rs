//! The Atoll scheduler: watches unbound pods and nodes, picks a node for each pod, and binds it
//! through `POST pods/<name>/binding`.
//!
//! Start reading at [`run`]. The decision itself is pure and lives in [`cache::Cache::schedule`]:
//! filters ([`plugins::filters`]) drop the nodes a pod cannot go to, scores ([`plugins::scores`]) rank
//! the rest. The cache counts bound pods and pods assumed but not yet bound, so the next pod is
//! placed without waiting for the previous binding. [`queue`] holds the pods waiting for a decision,
//! with backoff for the ones that did not fit.

pub mod cache;
pub mod metrics;
pub mod node_info;
pub mod plugins;
pub mod pod_info;
pub mod queue;
pub mod resources;
mod run;

pub use run::{Config, DEFAULT_SCHEDULER_NAME, Error, run, run_until};
