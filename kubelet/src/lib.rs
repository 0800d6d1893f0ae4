//! The Atoll kubelet: the node agent.
