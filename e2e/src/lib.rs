//! End-to-end tests live in `tests/`; they drive the real kubectl against the `atoll` binary.
