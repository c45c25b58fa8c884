//! ELF64 x86-64 + DWARF reader (placeholder until the reader lands).

use crate::{Error, Loaded, Result};

pub(crate) fn load<'data>(
    _binary: &'data [u8],
    _debug: Option<&'data [u8]>,
) -> Result<Loaded<'data>> {
    Err(Error::Unsupported {
        what: "ELF reading is not built yet".into(),
    })
}
