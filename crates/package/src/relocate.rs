//! Resolving a payload at its load address: the relocation arithmetic and the redirect bytes.
//! Both the build side (which executes lifted code in tests) and the applier call these, so a
//! payload resolves the same way everywhere.

use crate::Error;
use crate::manifest::{PatchSite, Redirect, Relocation, RelocationKind, RelocationTarget};

/// Writes every relocation's value into `payload`, which will live at `payload_base`; the
/// baseline image is mapped with `bias` (`address(rva) = bias + rva`).
///
/// `S` is `payload_base + offset` (payload target) or `bias + rva` (baseline target), `A` the
/// addend and `P = payload_base + relocation.offset`; rel32 stores `S + A - P` (which must fit an
/// `i32`), abs64 stores `S + A`.
/// On error the payload may be partly written; callers resolve into a scratch copy.
pub fn apply_relocations(
    payload: &mut [u8],
    payload_base: u64,
    bias: u64,
    relocations: &[Relocation],
) -> Result<(), Error> {
    let payload_len = payload.len() as u64;
    for relocation in relocations {
        let field = field_range(relocation, payload_len)?;
        let symbol = match relocation.target {
            RelocationTarget::Payload { offset } => {
                // A pointer just past the end is legitimate (end of an array), so `<=`.
                if offset > payload_len {
                    return Err(Error::RelocationTargetOutOfPayload {
                        offset: relocation.offset,
                        target_offset: offset,
                        payload_len,
                    });
                }
                payload_base.checked_add(offset)
            }
            RelocationTarget::Baseline { rva } => bias.checked_add(rva),
        }
        .ok_or(Error::AddressOverflow {
            address: payload_base,
        })?;
        let value = i128::from(symbol) + i128::from(relocation.addend);
        let bytes = match relocation.kind {
            RelocationKind::Rel32 => {
                let place =
                    payload_base
                        .checked_add(relocation.offset)
                        .ok_or(Error::AddressOverflow {
                            address: payload_base,
                        })?;
                let relative = value - i128::from(place);
                let relative = i32::try_from(relative).map_err(|_| Error::Rel32Overflow {
                    offset: relocation.offset,
                    value: relative,
                })?;
                relative.to_le_bytes().to_vec()
            }
            RelocationKind::Abs64 => {
                let absolute =
                    u64::try_from(value).map_err(|_| Error::AddressOverflow { address: symbol })?;
                absolute.to_le_bytes().to_vec()
            }
        };
        // `field_range` proved the range lies inside the payload.
        if let Some(slot) = payload.get_mut(field) {
            slot.copy_from_slice(&bytes);
        }
    }
    Ok(())
}

/// The byte range of a relocation's field, refused unless it lies inside a payload of
/// `payload_len` bytes.
pub(crate) fn field_range(
    relocation: &Relocation,
    payload_len: u64,
) -> Result<std::ops::Range<usize>, Error> {
    let out = || Error::RelocationOutOfPayload {
        offset: relocation.offset,
        payload_len,
    };
    let end = relocation
        .offset
        .checked_add(relocation.kind.width())
        .ok_or_else(out)?;
    if end > payload_len {
        return Err(out());
    }
    let start = usize::try_from(relocation.offset).map_err(|_| out())?;
    let end = usize::try_from(end).map_err(|_| out())?;
    Ok(start..end)
}

/// The address to write and the bytes that send `site`'s old entry at `site_address`
/// (`= bias + baseline_rva`) to its new code at `new_code` (`= payload_base + payload_offset`).
///
/// `Entry` writes `E9 rel32` at the entry; `Padding` writes `E9 rel32` in the 5 bytes of filler
/// before the entry, then `EB F9` (a short jump back onto it) at the entry.
pub fn redirect_bytes(
    site: &PatchSite,
    site_address: u64,
    new_code: u64,
) -> Result<(u64, Vec<u8>), Error> {
    let (write_address, jump_from) = match site.redirect {
        Redirect::Entry { .. } => (site_address, site_address),
        Redirect::Padding { .. } => {
            let padding = site_address.checked_sub(5).ok_or(Error::AddressOverflow {
                address: site_address,
            })?;
            (padding, padding)
        }
    };
    let next_instruction = jump_from
        .checked_add(5)
        .ok_or(Error::AddressOverflow { address: jump_from })?;
    let relative = i128::from(new_code) - i128::from(next_instruction);
    let relative = i32::try_from(relative).map_err(|_| Error::RedirectOutOfReach {
        function: site.function.clone(),
        from: site_address,
        to: new_code,
    })?;
    let mut bytes = Vec::with_capacity(site.redirect.len());
    bytes.push(0xE9);
    bytes.extend_from_slice(&relative.to_le_bytes());
    if let Redirect::Padding { .. } = site.redirect {
        // jmp rel8 -7: from the end of this 2-byte jump back to the start of the 5-byte one.
        bytes.extend_from_slice(&[0xEB, 0xF9]);
    }
    Ok((write_address, bytes))
}
