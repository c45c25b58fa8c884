//! PE32+ x86-64 + PDB reader (placeholder).

use crate::{Error, Loaded, Result};

pub(crate) fn load<'data>(
    _binary: &'data [u8],
    _debug: Option<&'data [u8]>,
) -> Result<Loaded<'data>> {
    Err(Error::Unsupported {
        what: "PE reading is not built yet".into(),
    })
}
