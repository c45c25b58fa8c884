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
    /// The inlinee's own file and line at the difference (DWARF: the line program's row;
    /// PDB: the inline site's binary annotations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<SourceLine>,
    /// The line of the call the compiler inlined: the caller's line, or the enclosing
    /// inlinee's when inlined code was itself inlined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_site: Option<SourceLine>,
}

/// How the line a finding points at was chosen (see [`fix_line`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FixBasis {
    /// A line with changed code that has no counterpart in the baseline: the fix added it.
    NewLine,
    /// The inlinee's line at the first difference, whose code changed at every site it is
    /// inlined into.
    FirstDifference,
    /// The call site of the inlined code at the first difference: the inlinee is inlined
    /// unchanged elsewhere, so the edit is in the call, not in the inlinee.
    CallSite,
}

/// The line a reviewer edits: where findings on the function point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FixLine {
    #[serde(flatten)]
    pub line: SourceLine,
    pub basis: FixBasis,
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
    /// The line of the first differing instruction of the fixed build (when the first
    /// difference deleted code, of the first changed instruction outside the prologue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_difference: Option<SourceLine>,
    /// Set when the first differing instruction lies in inlined code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inlined_from: Option<InlinedFrom>,
    /// The line of the fix, chosen from the line tables of both builds (see [`fix_line`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<FixLine>,
}

impl FunctionSource {
    /// The line a finding on this function points at: the fix if known, else the first
    /// difference, else the function's first line.
    pub fn primary(&self) -> Option<SourceLine> {
        if let Some(fix) = &self.fix {
            return Some(fix.line.clone());
        }
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
    let unchanged_inlinees = unchanged_inlinees(fixed, diff);
    for changed in &diff.changed {
        let fixed_function = fixed.functions.get(changed.fixed_index);
        let baseline_function = baseline.functions.get(changed.baseline_index);
        let difference_rva =
            fixed_function.and_then(|f| first_changed_rva(Side::new(fixed, f), changed));
        let (first_difference, inlined_from) = match (fixed_function, difference_rva) {
            (Some(function), Some(rva)) => at(fixed, function, rva, roots),
            _ => (None, None),
        };
        let fix = match (baseline_function, fixed_function) {
            (Some(b), Some(f)) => fix_line(
                Side::new(baseline, b),
                Side::new(fixed, f),
                changed,
                &unchanged_inlinees,
            )
            .and_then(|(key, basis)| {
                Some(FixLine {
                    line: SourceLine {
                        file: source_file(fixed, key.file, roots)?,
                        line: key.line,
                    },
                    basis,
                })
            }),
            _ => None,
        };
        sources.insert(
            changed.name.clone(),
            FunctionSource {
                fixed: fixed_function.and_then(|f| range(fixed, f, roots)),
                baseline: baseline_function.and_then(|f| range(baseline, f, roots)),
                first_difference,
                inlined_from,
                fix,
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
                fix: None,
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
                fix: None,
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

/// The line at the first differing instruction and, when it lies in inlined code, the inlinee
/// with its own line and the line of the call.
fn at(
    image: &Image<'_>,
    function: &Function<'_>,
    rva: u64,
    roots: &SourceRoots,
) -> (Option<SourceLine>, Option<InlinedFrom>) {
    let side = Side::new(image, function);
    let stack = side.stack(rva);
    let shown = |key: Option<&LineKey>| -> Option<SourceLine> {
        let key = key?;
        Some(SourceLine {
            file: source_file(image, key.file, roots)?,
            line: key.line,
        })
    };
    let line = shown(stack.innermost.as_ref());
    let inlined = side.innermost_site(rva).map(|site| InlinedFrom {
        inlinee: site.inlinee.clone(),
        line: line.clone(),
        call_site: shown(stack.calls.first()),
    });
    (line, inlined)
}

/// A line of a source file as the line tables name it: an index into `Image::source_files`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct LineKey {
    file: u32,
    line: u32,
}

/// The source lines an instruction belongs to: the innermost line (the inlinee's, in inlined
/// code) and the call sites that led there, innermost first.
#[derive(Default)]
struct Stack {
    innermost: Option<LineKey>,
    calls: Vec<LineKey>,
}

impl Stack {
    fn all(&self) -> impl Iterator<Item = LineKey> + '_ {
        self.innermost.iter().chain(&self.calls).copied()
    }
}

/// One build's function with the inline sites inside it.
#[derive(Clone, Copy)]
struct Side<'a, 'data> {
    image: &'a Image<'data>,
    function: &'a Function<'data>,
    sites: &'a [hotpatch_image::InlineSite],
}

impl<'a, 'data> Side<'a, 'data> {
    fn new(image: &'a Image<'data>, function: &'a Function<'data>) -> Self {
        let start = image
            .inline_sites
            .partition_point(|site| site.caller_rva < function.rva);
        let len = image.inline_sites[start..]
            .iter()
            .take_while(|site| site.caller_rva == function.rva)
            .count();
        Side {
            image,
            function,
            sites: &image.inline_sites[start..start + len],
        }
    }

    /// The inline sites whose code holds `rva`, innermost (shortest range) first.
    fn sites_at(&self, rva: u64) -> Vec<&'a hotpatch_image::InlineSite> {
        let mut found: Vec<(u64, &hotpatch_image::InlineSite)> = self
            .sites
            .iter()
            .filter_map(|site| {
                site.ranges
                    .iter()
                    .find(|&&(begin, len)| rva >= begin && rva < begin.saturating_add(len))
                    .map(|&(_, len)| (len, site))
            })
            .collect();
        found.sort_by(|a, b| (a.0, &a.1.inlinee).cmp(&(b.0, &b.1.inlinee)));
        found.into_iter().map(|(_, site)| site).collect()
    }

    fn innermost_site(&self, rva: u64) -> Option<&'a hotpatch_image::InlineSite> {
        self.sites_at(rva).into_iter().next()
    }

    /// The row of the image's line table in effect at `rva` inside the function (of several
    /// rows at one address the highest line, which in a DWARF program is the statement the code
    /// belongs to rather than the brace before it).
    fn table_row(&self, rva: u64) -> Option<LineKey> {
        let lines = &self.image.lines;
        let end = lines.partition_point(|row| row.rva <= rva);
        let row = lines[..end]
            .iter()
            .rev()
            .take_while(|row| row.rva >= self.function.rva)
            .find(|row| row.line != 0)?;
        Some(LineKey {
            file: row.file,
            line: row.line,
        })
    }

    /// An inline site's own row at `rva`, from its lines (PDB); `None` when it has none.
    fn site_row(site: &hotpatch_image::InlineSite, rva: u64) -> Option<LineKey> {
        let end = site.lines.partition_point(|row| row.rva <= rva);
        let row = site.lines[..end].iter().rev().find(|row| row.line != 0)?;
        Some(LineKey {
            file: row.file,
            line: row.line,
        })
    }

    /// The lines the instruction at `rva` belongs to. In DWARF the line table's row is the
    /// innermost line and each site records its call; in a PDB the innermost site's
    /// annotations give the inlinee's line, and each call is the line of the scope around it
    /// (the enclosing site's annotations, or the function's own table).
    fn stack(&self, rva: u64) -> Stack {
        let sites = self.sites_at(rva);
        let Some(innermost_site) = sites.first() else {
            return Stack {
                innermost: self.table_row(rva),
                calls: Vec::new(),
            };
        };
        let innermost = if innermost_site.lines.is_empty() {
            self.table_row(rva)
        } else {
            Self::site_row(innermost_site, rva)
        };
        let mut calls = Vec::new();
        for (idx, site) in sites.iter().enumerate() {
            let call = match &site.call_site {
                Some(row) => Some(LineKey {
                    file: row.file,
                    line: row.line,
                }),
                None => match sites.get(idx + 1) {
                    Some(outer) => Self::site_row(outer, rva),
                    None => self.table_row(rva),
                },
            };
            calls.extend(call);
        }
        Stack { innermost, calls }
    }
}

/// Inlinees that some function the diff left alone (unchanged in code) has inlined into it in
/// the fixed build: their source did not change in a way their code shows.
fn unchanged_inlinees(fixed: &Image<'_>, diff: &Diff) -> std::collections::BTreeSet<String> {
    let changed: std::collections::BTreeSet<u64> = diff
        .changed
        .iter()
        .map(|c| c.fixed_rva)
        .chain(diff.added.iter().map(|a| a.rva))
        .collect();
    fixed
        .inline_sites
        .iter()
        .filter(|site| !changed.contains(&site.caller_rva))
        .map(|site| site.inlinee.clone())
        .collect()
}

/// The fixed build's first differing instruction. A first difference that deleted code has
/// none: the first changed instruction outside the prologue and epilogue stands in (their code
/// carries the entry line and changes with register allocation and frame size, not with the
/// source).
fn first_changed_rva(fixed: Side<'_, '_>, changed: &hotpatch_diff::ChangedFunction) -> Option<u64> {
    if let Some(rva) = changed
        .first_difference
        .as_ref()
        .and_then(|difference| difference.fixed_rva)
    {
        return Some(rva);
    }
    let unchanged: std::collections::BTreeSet<u64> =
        changed.unchanged.iter().map(|&(_, f)| f).collect();
    let entry_line = fixed.table_row(fixed.function.rva);
    let mut differing = changed
        .fixed_code
        .iter()
        .map(|instruction| instruction.rva)
        .filter(|rva| !unchanged.contains(rva));
    differing
        .clone()
        .find(|&rva| fixed.stack(rva).innermost != entry_line)
        .or_else(|| differing.next())
}

/// The line a reviewer edits, derived from the line tables of both builds and the diff's
/// alignment of their instructions.
///
/// The aligned equal instructions map baseline lines to fixed lines (which is how lines that
/// only moved are recognized). A line of changed code in the fixed build is *new* when no
/// equal instruction lies on it and the baseline line it corresponds to (by the shift of the
/// nearest mapped line below or above) had no changed code either: the fix wrote it. The first
/// new line in code order, at any level of inlining, is the fix (Lua CVE-2022-28805: the first
/// difference is register allocation in inlined `singlevaraux`, the new line is the added
/// `luaK_exp2anyregup` call). Without a new line the fix is an edit in place: the innermost
/// line at the first difference, unless that lies in an inlinee that other, unchanged
/// functions inline too, whose source therefore did not change: then the call site.
fn fix_line(
    baseline: Side<'_, '_>,
    fixed: Side<'_, '_>,
    changed: &hotpatch_diff::ChangedFunction,
    unchanged_inlinees: &std::collections::BTreeSet<String>,
) -> Option<(LineKey, FixBasis)> {
    use std::collections::{BTreeMap, BTreeSet};
    let unchanged_fixed: BTreeSet<u64> = changed.unchanged.iter().map(|&(_, f)| f).collect();
    let unchanged_baseline: BTreeSet<u64> = changed.unchanged.iter().map(|&(b, _)| b).collect();
    // Fixed lines with unchanged code, and the baseline line each came from (innermost level
    // and call sites, paired level by level).
    let mut mapped_fixed: BTreeSet<LineKey> = BTreeSet::new();
    let mut line_map: BTreeMap<LineKey, LineKey> = BTreeMap::new();
    for &(b, f) in &changed.unchanged {
        let (old, new) = (baseline.stack(b), fixed.stack(f));
        for (old_key, new_key) in old.all().zip(new.all()) {
            mapped_fixed.insert(new_key);
            line_map.entry(new_key).or_insert(old_key);
        }
        mapped_fixed.extend(new.all());
    }
    // Baseline lines whose code changed (none of it stayed equal).
    let mut baseline_with_code: BTreeSet<LineKey> = BTreeSet::new();
    let mut baseline_mapped: BTreeSet<LineKey> = BTreeSet::new();
    for instruction in &changed.baseline_code {
        let keys = baseline.stack(instruction.rva);
        if unchanged_baseline.contains(&instruction.rva) {
            baseline_mapped.extend(keys.all());
        } else {
            baseline_with_code.extend(keys.all());
        }
    }
    let baseline_changed: BTreeSet<LineKey> = baseline_with_code
        .difference(&baseline_mapped)
        .copied()
        .collect();
    // Where `key` was in the baseline, by the shift of the nearest mapped line of its file.
    let counterparts = |key: LineKey| -> Vec<LineKey> {
        let same_file = |(new, _): &(&LineKey, &LineKey)| new.file == key.file;
        let below = line_map.range(..key).rev().find(same_file);
        let above = line_map.range(key..).find(same_file);
        [below, above]
            .into_iter()
            .flatten()
            .filter_map(|(new, old)| {
                let line = i64::from(key.line) - i64::from(new.line) + i64::from(old.line);
                Some(LineKey {
                    file: old.file,
                    line: u32::try_from(line).ok()?,
                })
            })
            .collect()
    };
    let entry_line = fixed.table_row(fixed.function.rva);
    let rva = first_changed_rva(fixed, changed)?;
    let stack = fixed.stack(rva);
    let Some(site) = fixed.innermost_site(rva) else {
        return stack.innermost.map(|key| (key, FixBasis::FirstDifference));
    };
    // In inlined code the first difference is often a side effect (register allocation,
    // scheduling) of an edit elsewhere in the caller: a new line wins.
    let has_map = !line_map.is_empty();
    let differing = changed
        .fixed_code
        .iter()
        .map(|instruction| instruction.rva)
        .filter(|rva| !unchanged_fixed.contains(rva));
    for rva in differing {
        for key in fixed.stack(rva).all() {
            if mapped_fixed.contains(&key) || Some(key) == entry_line {
                continue;
            }
            let counterparts = counterparts(key);
            let existed = counterparts
                .iter()
                .any(|old| baseline_changed.contains(old));
            if has_map && !counterparts.is_empty() && !existed {
                return Some((key, FixBasis::NewLine));
            }
        }
    }
    if unchanged_inlinees.contains(&site.inlinee) {
        return stack.calls.first().map(|&key| (key, FixBasis::CallSite));
    }
    stack.innermost.map(|key| (key, FixBasis::FirstDifference))
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
