//! Atoll's API machinery, shared by every component: the kind registry ([`registry`], with the built-in
//! kinds in [`kinds`]), label and field selectors ([`selector`]), validation helpers ([`validation`]),
//! Table printing ([`table`]), patches ([`patch`]) and the error type every API failure becomes ([`error`]).
//! No I/O happens here.

pub mod apply;
pub mod error;
pub mod kinds;
pub mod meta;
pub mod patch;
pub mod patch_meta;
pub mod podlog;
pub mod podstream;
pub mod registry;
pub mod selector;
pub mod strategic;
pub mod structural;
pub mod table;
pub mod validation;

pub use error::{ApiError, ApiResult, Cause};
pub use registry::{Decoded, KindInfo, Registry, ScalePaths, Strategy, Subresource, UpdateScope};
