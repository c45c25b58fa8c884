//! Integration tests of the `hotpatch` binary and its libraries against the committed fixtures.

mod check;
mod cli;
mod diff;
mod independent;
mod mutation;
mod package_cli;
mod support;
mod tidy;
