//! Tests of the ELF reader.
