//! The Atoll API server: the Kubernetes REST API over etcd.
//!
//! Start at [`server::start`] (or [`server::run`] for the command line). A request is routed by
//! [`request::route`] to the generic verbs in [`rest`], which read through [`storage`] (etcd) or the
//! [`cache`] (watch cache) and write through the object lifecycle in [`ops`]. Every kind is an entry of
//! `atoll_api::kinds::builtin()`; nothing here is written per kind except Service allocation ([`alloc`]),
//! pod binding and graceful deletion, namespace termination, and `pods/log`, which [`podlogs`]
//! relays from the pod's kubelet.

pub mod alloc;
pub mod cache;
pub mod crd;
pub mod discovery;
pub mod extract;
pub mod negotiate;
pub mod object;
pub mod openapi;
pub mod ops;
pub mod podlogs;
pub mod podstreams;
pub mod request;
pub mod rest;
pub mod server;
pub mod storage;
pub mod table;
pub mod watch;

pub use server::{Config, Handle, StartError, run, start};
