//! Unwind entries from the FDEs of `.eh_frame`, which a replaced function needs at run time for
//! exceptions and stack walks.

use gimli::UnwindSection;

use super::{SectionFacts, section_bytes};
use crate::model::{Diagnostic, DiagnosticLocation, UnwindEntry};

/// Stops a hostile `.eh_frame` from making the reader report without end: far more FDEs than
/// any real file holds.
const MAX_DIAGNOSTICS: usize = 64;

/// One [`UnwindEntry`] per FDE of `.eh_frame`; an FDE that does not parse is a diagnostic.
pub(super) fn read(
    sections: &[SectionFacts<'_>],
    data: &[u8],
    diagnostics: &mut Vec<Diagnostic>,
) -> Vec<UnwindEntry> {
    let Some(eh_frame_section) = sections
        .iter()
        .find(|s| s.is_alloc() && s.name == ".eh_frame")
    else {
        return Vec::new();
    };
    let section_address = |name: &str| {
        sections
            .iter()
            .find(|s| s.is_alloc() && s.name == name)
            .map(|s| s.addr)
    };
    // Pointer encodings in `.eh_frame` may be relative to the section itself, `.text` or the
    // GOT: give gimli all three bases.
    let mut bases = gimli::BaseAddresses::default().set_eh_frame(eh_frame_section.addr);
    if let Some(text) = section_address(".text") {
        bases = bases.set_text(text);
    }
    if let Some(got) = section_address(".got") {
        bases = bases.set_got(got);
    }
    let eh_frame = gimli::EhFrame::new(section_bytes(eh_frame_section, data), gimli::LittleEndian);
    let report = |diagnostics: &mut Vec<Diagnostic>, message: String| {
        if diagnostics.len() < MAX_DIAGNOSTICS {
            diagnostics.push(Diagnostic {
                location: DiagnosticLocation::Section(".eh_frame".into()),
                message,
                function: None,
            });
        }
    };
    let mut local_diagnostics = Vec::new();
    let mut entries = Vec::new();
    let mut iter = eh_frame.entries(&bases);
    loop {
        match iter.next() {
            Ok(None) => break,
            Ok(Some(gimli::CieOrFde::Cie(_))) => {}
            Ok(Some(gimli::CieOrFde::Fde(partial))) => {
                match partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
                {
                    Ok(fde) => {
                        let begin = fde.initial_address();
                        entries.push(UnwindEntry {
                            begin,
                            end: begin.saturating_add(fde.len()),
                            info: fde.offset() as u64,
                        });
                    }
                    Err(error) => report(
                        &mut local_diagnostics,
                        format!("FDE at offset {:#x}: {error}", partial.offset()),
                    ),
                }
            }
            Err(error) => {
                // The length of the broken entry is unknown, so nothing after it can be found.
                report(
                    &mut local_diagnostics,
                    format!("cannot read an entry, the rest of the section is skipped: {error}"),
                );
                break;
            }
        }
    }
    diagnostics.extend(local_diagnostics);
    entries
}
