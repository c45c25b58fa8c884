//! Integration tests of the `hotpatch` binary and its libraries against the committed fixtures.

mod build;
mod check;
mod ci_formats;
mod cli;
mod diff;
mod independent;
mod lift;
mod mutation;
mod package_cli;
mod shard;
mod support;
mod tidy;
mod typed_compare;
mod unwind;
