//! Unit tests of lifting.
