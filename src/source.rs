//! Source locations of changed functions and findings, from the line tables of the image model
//! (PDB C13 lines, DWARF line programs): the file and line range of each changed, added or
//! line-only function, the line of the first differing instruction, and for a difference in
//! inlined code the inlinee it came from. Build paths are mapped to the repository by
//! `--source-root PREFIX=DIR`, the way `-ffile-prefix-map` maps them at compile time.

use hotpatch_diff::Diff;
use hotpatch_image::{Function, Image};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `--source-root PREFIX=DIR` mapping.
#[derive(Clone, Debug)]
pub struct SourceRoot {
    /// The build path prefix, normalized (forward slashes, no `.` components).
    prefix: String,
    dir: PathBuf,
}

impl std::str::FromStr for SourceRoot {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((prefix, dir)) = text.split_once('=') else {
            return Err(format!(
                "expected PREFIX=DIR (as -ffile-prefix-map), found {text:?}"
            ));
        };
        if dir.is_empty() {
            return Err(format!("the directory of {text:?} is empty"));
        }
        Ok(SourceRoot {
            prefix: normalize(prefix),
            dir: PathBuf::from(dir),
        })
    }
}

/// Maps recorded build paths to paths in the repository.
#[derive(Clone, Debug, Default)]
pub struct SourceRoots(Vec<SourceRoot>);

impl SourceRoots {
    pub fn new(roots: &[SourceRoot]) -> Self {
        SourceRoots(roots.to_vec())
    }

    /// The repository path of a build path: the longest matching prefix wins (at a path
    /// component boundary; an empty prefix matches every relative path), `None` when no
    /// mapping applies.
    pub fn map(&self, build_path: &str) -> Option<String> {
        let path = normalize(build_path);
        let mut best: Option<(&SourceRoot, &str)> = None;
        for root in &self.0 {
            let rest = if root.prefix.is_empty() {
                if path.starts_with('/') || has_drive(&path) {
                    continue;
                }
                Some(path.as_str())
            } else {
                path.strip_prefix(root.prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/'))
            };
            let Some(rest) = rest else { continue };
            if best.is_none_or(|(b, _)| root.prefix.len() > b.prefix.len()) {
                best = Some((root, rest.trim_start_matches('/')));
            }
        }
        let (root, rest) = best?;
        let joined = if rest.is_empty() {
            root.dir.clone()
        } else {
            root.dir.join(rest)
        };
        Some(normalize(&joined.to_string_lossy()))
    }
}

fn has_drive(path: &str) -> bool {
    let bytes = path.as_bytes();
    bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':'
}

/// Forward slashes, no empty or `.` components: `././fixed.c` and `fixed.c` are one file, and
/// a PDB's `C:\src\a.c` matches a prefix written `C:/src`.
pub fn normalize(path: &str) -> String {
    let path = path.replace('\\', "/");
    let absolute = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// A source file as the debug information records it, and where it is in the repository.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct SourceFile {
    /// The build path recorded in the debug information, normalized.
    pub file: String,
    /// The path after `--source-root`, when a mapping applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl SourceFile {
    /// The path to show and to open: the mapped one, else the build path.
    pub fn shown(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.file)
    }
}

/// Lines `first_line..=last_line` of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceRange {
    #[serde(flatten)]
    pub file: SourceFile,
    pub first_line: u32,
    pub last_line: u32,
}

/// One line of one file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLine {
    #[serde(flatten)]
    pub file: SourceFile,
    pub line: u32,
}

/// Where a difference lies in code the compiler inlined from another function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InlinedFrom {
    pub inlinee: String,
    /// The inlinee's own file and line, when the line table describes the inlined code (DWARF
    /// does; the PDB reader records inline ranges without their lines, so this is absent there
    /// and `first_difference` is the call site).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<SourceLine>,
}

/// The source location of one changed, added or line-only function in the fixed build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FunctionSource {
    /// The function's own lines in the fixed build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fixed: Option<SourceRange>,
    /// The function's own lines in the baseline build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<SourceRange>,
    /// The line of the first differing instruction of the fixed build: where the fix is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<SourceLine>,
    /// Set when the first differing instruction lies in inlined code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inlined_from: Option<InlinedFrom>,
}

impl FunctionSource {
    /// The line a finding on this function points at: the fix if known, else the function's
    /// first line.
    pub fn primary(&self) -> Option<SourceLine> {
        if let Some(line) = &self.first_difference {
            return Some(line.clone());
        }
        self.fixed.as_ref().map(|range| SourceLine {
            file: range.file.clone(),
            line: range.first_line,
        })
    }

    /// `file:first-last` of the fixed build, for reports.
    pub fn range_text(&self) -> Option<String> {
        let range = self.fixed.as_ref()?;
        Some(if range.first_line == range.last_line {
            format!("{}:{}", range.file.shown(), range.first_line)
        } else {
            format!(
                "{}:{}-{}",
                range.file.shown(),
                range.first_line,
                range.last_line
            )
        })
    }
}

/// Source locations of every changed, added and line-only function, by the name the assessment
/// uses (the baseline name for changed functions, as `Finding::function`).
pub type Sources = BTreeMap<String, FunctionSource>;

/// Computes the source locations of the diff's functions.
pub fn locate(
    baseline: &Image<'_>,
    fixed: &Image<'_>,
    diff: &Diff,
    roots: &SourceRoots,
) -> Sources {
    let mut sources = Sources::new();
    for changed in &diff.changed {
        let fixed_function = fixed.functions.get(changed.fixed_index);
        let baseline_function = baseline.functions.get(changed.baseline_index);
        let difference_rva = changed
            .first_difference
            .as_ref()
            .and_then(|difference| difference.fixed_rva);
        let (first_difference, inlined_from) = match (fixed_function, difference_rva) {
            (Some(function), Some(rva)) => at(fixed, function, rva, roots),
            _ => (None, None),
        };
        sources.insert(
            changed.name.clone(),
            FunctionSource {
                fixed: fixed_function.and_then(|f| range(fixed, f, roots)),
                baseline: baseline_function.and_then(|f| range(baseline, f, roots)),
                first_difference,
                inlined_from,
            },
        );
    }
    for added in &diff.added {
        let fixed_function = fixed.functions.get(added.index);
        sources.insert(
            added.name.clone(),
            FunctionSource {
                fixed: fixed_function.and_then(|f| range(fixed, f, roots)),
                baseline: None,
                first_difference: None,
                inlined_from: None,
            },
        );
    }
    for line_only in &diff.line_only {
        let find = |image: &'_ Image<'_>| -> Option<SourceRange> {
            let function = image.functions.iter().find(|f| f.name == line_only.name)?;
            range(image, function, roots)
        };
        sources.insert(
            line_only.name.clone(),
            FunctionSource {
                fixed: find(fixed),
                baseline: find(baseline),
                first_difference: None,
                inlined_from: None,
            },
        );
    }
    sources
}

fn source_file(image: &Image<'_>, file: u32, roots: &SourceRoots) -> Option<SourceFile> {
    let recorded = image.source_files.get(usize::try_from(file).ok()?)?;
    Some(SourceFile {
        file: normalize(recorded),
        path: roots.map(recorded),
    })
}

/// The ranges of code inlined into `function`.
fn inlined_ranges<'a>(
    image: &'a Image<'_>,
    function: &Function<'_>,
) -> impl Iterator<Item = (&'a str, u64, u64)> {
    let start = image
        .inline_sites
        .partition_point(|site| site.caller_rva < function.rva);
    let caller = function.rva;
    image.inline_sites[start..]
        .iter()
        .take_while(move |site| site.caller_rva == caller)
        .flat_map(|site| {
            site.ranges
                .iter()
                .map(move |&(begin, len)| (site.inlinee.as_str(), begin, begin.saturating_add(len)))
        })
}

/// The function's own lines: the rows in its body outside inlined code, in the file of its
/// first row, from the lowest line at its entry to the highest line below it.
fn range(image: &Image<'_>, function: &Function<'_>, roots: &SourceRoots) -> Option<SourceRange> {
    let inlined: Vec<(u64, u64)> = inlined_ranges(image, function)
        .map(|(_, begin, end)| (begin, end))
        .collect();
    let start = image.lines.partition_point(|row| row.rva < function.rva);
    let own: Vec<&hotpatch_image::LineRow> = image.lines[start..]
        .iter()
        .take_while(|row| row.rva < function.end().max(function.rva.saturating_add(1)))
        .filter(|row| row.line != 0)
        .filter(|row| {
            !inlined
                .iter()
                .any(|&(begin, end)| row.rva >= begin && row.rva < end)
        })
        .collect();
    let entry = *own.first()?;
    let file = entry.file;
    // The first line comes from the rows at the entry (the prologue), and rows above it are
    // inlined code whose recorded ranges fall short of the rows it left (GCC's `inlined_helper`
    // has a row of the helper's line just past its inline range).
    let first_line = own
        .iter()
        .take_while(|row| row.rva == entry.rva)
        .filter(|row| row.file == file)
        .map(|row| row.line)
        .min()?;
    let last_line = own
        .iter()
        .filter(|row| row.file == file && row.line >= first_line)
        .map(|row| row.line)
        .max()?;
    Some(SourceRange {
        file: source_file(image, file, roots)?,
        first_line,
        last_line,
    })
}

/// The line in effect at `rva` (the last row at or before it inside the function; of several
/// rows at one address the highest line, which in a DWARF program is the statement the code
/// belongs to rather than the brace before it), and the inlinee when `rva` is in inlined code.
fn at(
    image: &Image<'_>,
    function: &Function<'_>,
    rva: u64,
    roots: &SourceRoots,
) -> (Option<SourceLine>, Option<InlinedFrom>) {
    let end = image.lines.partition_point(|row| row.rva <= rva);
    let row = image.lines[..end]
        .iter()
        .rev()
        .take_while(|row| row.rva >= function.rva)
        .find(|row| row.line != 0);
    let line = row.and_then(|row| {
        Some(SourceLine {
            file: source_file(image, row.file, roots)?,
            line: row.line,
        })
    });
    let inlinee = inlined_ranges(image, function)
        .find(|&(_, begin, end)| rva >= begin && rva < end)
        .map(|(inlinee, begin, _)| (inlinee.to_owned(), begin));
    let Some((inlinee, begin)) = inlinee else {
        return (line, None);
    };
    // The row belongs to the inlinee only when the line table has rows inside the inlined range
    // (DWARF); otherwise it is the caller's row before the call site.
    let inlinee_line = row.filter(|row| row.rva >= begin).and(line.clone());
    (
        line,
        Some(InlinedFrom {
            inlinee,
            line: inlinee_line,
        }),
    )
}

/// Reads line `line` (1-based) of a source file, when it is readable.
pub fn read_line(file: &SourceFile, line: u32, cwd: &Path) -> Option<String> {
    let path = cwd.join(file.shown());
    let text = fs_err::read_to_string(path).ok()?;
    let idx = usize::try_from(line).ok()?.checked_sub(1)?;
    text.lines().nth(idx).map(|l| l.trim_end().to_owned())
}

#[cfg(test)]
mod tests;
