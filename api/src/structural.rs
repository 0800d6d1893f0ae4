//! Custom resources checked against their CustomResourceDefinition's `openAPIV3Schema`, as Kubernetes'
//! apiextensions server does: pruning of unknown fields, defaulting, validation, and the structural
//! schema rules a CRD's schema must follow.
