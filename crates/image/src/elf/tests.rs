//! Tests of the ELF reader against real gcc output (checked with binutils' own view of the same
//! file) and against hostile input, which must give `Ok` or `Err` but never a panic.
//!
//! The binaries are built at test time with gcc and g++. A test that cannot find gcc, g++,
//! objcopy, nm or readelf fails when `CI` is set (CI installs them with
//! `ci/install-packages --tests`); elsewhere it prints why it skipped and checks nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::model::{
    DataKind, DiagnosticLocation, ElfType, Image, InitializerTable, Linkage, Machine,
    RelocationOrigin, RelocationType, TypeKind,
};
use crate::{Error, Loaded, load};

/// A C program with most of what the reader must see: two CUs with a static function of the
/// same name, a struct with bit fields, a typedef'd anonymous struct, TLS, a constructor, static
/// locals, inlining and a read-only table.
const MAIN_C: &str = r#"
#include <stdio.h>
#include <string.h>
struct session { int id; char name[16]; struct session *next; unsigned flags:3, mode:5; const char *label; };
typedef struct { int x, y; } point_t;
union u { int i; float f; };
struct session g_session = {1, "abc"};
static point_t origin;
const int table[16] = {1,2,3};
__thread int tls_counter = 5;
__thread char tls_buf[32];
union u g_u;
static int helper(int x) { static int count; count += x; return count * 3; }
static inline int sq(int v) { return v * v; }
int compute(int a) { return helper(a) + sq(a) + origin.x; }
__attribute__((constructor)) static void init_me(void) { tls_counter++; g_session.id = 7; }
extern int other(int);
int main(int argc, char **argv) {
    printf("%d %d\n", compute(argc), other(argc));
    tls_buf[0] = argv[0][0];
    return strlen(argv[0]) + tls_counter + g_u.i;
}
"#;

const OTHER_C: &str = r#"
static int helper(int x) { return x + 11; }
int other(int a) { return helper(a) * 2; }
"#;

const CLASSES_CPP: &str = r#"
#include <cstdio>
namespace app {
struct Base { virtual ~Base() {} int b; virtual int get() const { return b; } };
class Widget : public Base {
 public:
  Widget(int v) : value(v) {}
  int get() const override { return value * 2; }
  static int instances;
  __attribute__((noinline)) int compute(int x);
 private:
  int value; double scale = 1.5;
};
int Widget::instances = 3;
int Widget::compute(int x) { return x + get() + instances; }
}
int main(int argc, char **) {
  app::Widget w(argc);
  std::printf("%d\n", w.compute(argc));
  return 0;
}
"#;

/// Whether `tool` runs. A missing tool fails the test when `CI` is set, so CI never passes a
/// test that checked nothing; elsewhere it prints that the test skipped, and why.
fn tool_available(tool: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed and CI is set: install it with ci/install-packages --tests"
        );
        eprintln!("skipped: {tool} is not installed (ci/install-packages --tests installs it)");
    }
    found
}

/// A scratch directory of this test process.
fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hotpatch-elf-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// Compiles `sources` (name, text) with `compiler` and `flags` into `output`; `None` (with a
/// message) when the compiler is missing.
fn build(
    compiler: &str,
    output: &str,
    sources: &[(&str, &str)],
    flags: &[&str],
) -> Option<PathBuf> {
    if !tool_available(compiler) {
        return None;
    }
    // One directory per output: tests run in parallel and would otherwise rewrite a source
    // file while another compiler reads it.
    let dir = scratch_dir().join(output);
    std::fs::create_dir_all(&dir).expect("create the build directory");
    let mut command = Command::new(compiler);
    for (name, text) in sources {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a source file");
        command.arg(path);
    }
    let out = dir.join(output);
    let status = command
        .args(flags)
        .arg("-o")
        .arg(&out)
        .status()
        .expect("run the compiler");
    assert!(status.success(), "{compiler} {flags:?} failed");
    Some(out)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read a built file")
}

/// The main C program built with `-O2 -g` (PIE), once per test process.
fn main_o2() -> Option<&'static [u8]> {
    static BYTES: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    BYTES
        .get_or_init(|| {
            let path = build(
                "gcc",
                "main_o2",
                &[("main.c", MAIN_C), ("other.c", OTHER_C)],
                &["-O2", "-g"],
            )?;
            Some(read(&path))
        })
        .as_deref()
}

fn load_ok(bytes: &[u8]) -> Loaded<'_> {
    match load(bytes, None) {
        Ok(loaded) => loaded,
        Err(error) => panic!("load failed: {error}"),
    }
}

fn function_named<'a, 'data>(image: &'a Image<'data>, name: &str) -> &'a crate::Function<'data> {
    image
        .functions
        .iter()
        .find(|f| f.name == name || f.aliases.iter().any(|a| a == name))
        .unwrap_or_else(|| panic!("no function {name}"))
}

/// `(address, name)` of every defined `STT_FUNC` symbol with an address, as binutils sees them:
/// `nm --defined-only` for t/T/W, filtered to `FUNC` by `readelf -s` because `W` also covers
/// weak symbols without a type.
fn binutils_functions(path: &Path) -> Option<Vec<(u64, String)>> {
    if !tool_available("nm") || !tool_available("readelf") {
        return None;
    }
    let readelf = Command::new("readelf").arg("-sW").arg(path).output().ok()?;
    let readelf = String::from_utf8_lossy(&readelf.stdout).into_owned();
    let mut func_names = std::collections::BTreeSet::new();
    for line in readelf.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [_, _, _, "FUNC", _, _, index, name, ..] = fields.as_slice()
            && *index != "UND"
        {
            func_names.insert((*name).to_owned());
        }
    }
    let nm = Command::new("nm")
        .arg("--defined-only")
        .arg(path)
        .output()
        .ok()?;
    let mut functions: Vec<(u64, String)> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = u64::from_str_radix(fields.next()?, 16).ok()?;
            let kind = fields.next()?;
            let name = fields.next()?;
            (matches!(kind, "t" | "T" | "W") && address != 0 && func_names.contains(name))
                .then(|| (address, name.to_owned()))
        })
        .collect();
    functions.sort();
    functions.dedup();
    Some(functions)
}

fn model_functions(image: &Image<'_>) -> Vec<(u64, String)> {
    let mut functions: Vec<(u64, String)> = image
        .functions
        .iter()
        .flat_map(|f| {
            std::iter::once((f.rva, f.name.clone()))
                .chain(f.aliases.iter().map(|alias| (f.rva, alias.clone())))
        })
        .collect();
    functions.sort();
    functions
}

#[test]
fn functions_match_nm_for_every_build_flavour() {
    let flavours: [(&str, &[&str]); 6] = [
        ("o2", &["-O2", "-g"]),
        ("o0", &["-O0", "-g"]),
        ("nopie", &["-O2", "-g", "-no-pie"]),
        ("pie", &["-O2", "-g", "-fPIE", "-pie"]),
        ("emit", &["-O2", "-g", "-Wl,--emit-relocs"]),
        ("dwarf4", &["-O2", "-gdwarf-4"]),
    ];
    for (name, flags) in flavours {
        let output = format!("flavour_{name}");
        let Some(path) = build(
            "gcc",
            &output,
            &[("main.c", MAIN_C), ("other.c", OTHER_C)],
            flags,
        ) else {
            return;
        };
        let bytes = read(&path);
        let loaded = load_ok(&bytes);
        let Some(expected) = binutils_functions(&path) else {
            return;
        };
        assert_eq!(model_functions(&loaded.image), expected, "flavour {name}");
        assert!(
            loaded.diagnostics.is_empty(),
            "flavour {name}: {:?}",
            loaded.diagnostics
        );
        assert_eq!(loaded.image.debug_info, crate::DebugInfoSource::Dwarf);
        let compute = function_named(&loaded.image, "compute");
        assert!(compute.has_debug_info, "flavour {name}");
        assert_eq!(
            compute.compile_unit.as_deref().map(file_name),
            Some("main.c")
        );
        assert!(!compute.code.is_empty());
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[test]
fn identity_sections_entry_and_tls() {
    let Some(bytes) = main_o2() else { return };
    let image = load_ok(bytes).image;
    assert_eq!(image.identity.machine, Machine::X86_64);
    assert_eq!(image.identity.file_size, bytes.len() as u64);
    assert_eq!(image.identity.sha256, crate::sha256_hex(bytes));
    let elf = image.identity.elf.as_ref().expect("ELF identity");
    assert_eq!(elf.elf_type, ElfType::Dyn);
    assert_eq!(elf.build_id.as_ref().map(String::len), Some(40));
    let text = image
        .sections
        .iter()
        .find(|s| s.name == ".text")
        .expect(".text");
    assert!(text.executable && !text.writable);
    let bss = image
        .sections
        .iter()
        .find(|s| s.name == ".bss")
        .expect(".bss");
    assert_eq!(bss.file_size, 0);
    let entry = image.entry_point.expect("entry point");
    assert_eq!(
        image.function_at(entry).map(|f| f.name.as_str()),
        Some("_start")
    );
    let tls = image.tls.as_ref().expect("PT_TLS");
    // One initialized int, then 32 zero-filled bytes (aligned).
    assert_eq!(tls.template_end - tls.template_start, 4);
    assert!(tls.block_size >= 36);
}

#[test]
fn static_functions_of_the_same_name_keep_their_units() {
    let Some(path) = build(
        "gcc",
        "same_name_o0",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O0", "-g"],
    ) else {
        return;
    };
    let bytes = read(&path);
    let image = load_ok(&bytes).image;
    let mut helpers: Vec<(&str, Linkage)> = image
        .functions
        .iter()
        .filter(|f| f.name == "helper")
        .map(|f| (f.compile_unit.as_deref().map_or("", file_name), f.linkage))
        .collect();
    helpers.sort();
    assert_eq!(
        helpers,
        [("main.c", Linkage::Static), ("other.c", Linkage::Static)]
    );
}

#[test]
fn data_symbols_have_kinds_and_types() {
    let Some(bytes) = main_o2() else { return };
    let image = load_ok(bytes).image;
    let data = |name: &str| {
        image
            .data_symbols
            .iter()
            .find(|d| d.name == name)
            .unwrap_or_else(|| panic!("no data symbol {name}"))
    };
    let session = data("g_session");
    assert_eq!(session.kind, DataKind::Writable);
    assert_eq!(session.type_name.as_deref(), Some("struct session"));
    assert_eq!(
        session.compile_unit.as_deref().map(file_name),
        Some("main.c")
    );
    assert_eq!(data("table").kind, DataKind::ReadOnly);
    assert_eq!(data("table").type_name.as_deref(), Some("const int[16]"));
    assert_eq!(data("g_u").kind, DataKind::ZeroInitialized);
    assert_eq!(data("g_u").type_name.as_deref(), Some("union u"));
    assert_eq!(data("tls_counter").kind, DataKind::ThreadLocal);
    assert_eq!(data("tls_buf").type_name.as_deref(), Some("char[32]"));
    let count = image
        .data_symbols
        .iter()
        .find(|d| d.name.starts_with("count."))
        .expect("the static local");
    assert_eq!(count.linkage, Linkage::Static);
    assert_eq!(count.type_name.as_deref(), Some("int"));
}

/// Name, offset, type name and bits of a field.
type FieldSummary<'a> = (&'a str, u64, &'a str, Option<(u32, u32)>);

#[test]
fn types_have_layouts() {
    let Some(bytes) = main_o2() else { return };
    let image = load_ok(bytes).image;
    let session = image
        .types
        .iter()
        .find(|t| t.name == "session")
        .expect("struct session");
    assert_eq!(session.kind, TypeKind::Struct);
    assert_eq!(session.size, 48);
    let fields: Vec<FieldSummary<'_>> = session
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.offset, f.type_name.as_str(), f.bits))
        .collect();
    assert_eq!(
        fields,
        [
            ("id", 0, "int", None),
            ("name", 4, "char[16]", None),
            ("next", 24, "struct session*", None),
            ("flags", 32, "unsigned int", Some((0, 3))),
            ("mode", 32, "unsigned int", Some((3, 5))),
            ("label", 40, "const char*", None),
        ]
    );
    // The anonymous struct is named by its typedef.
    assert!(
        image
            .types
            .iter()
            .any(|t| t.name == "point_t" && t.size == 8)
    );
    assert!(
        image
            .types
            .iter()
            .any(|t| t.name == "u" && t.kind == TypeKind::Union)
    );
}

#[test]
fn bit_fields_read_the_same_from_dwarf_4_and_5() {
    let mut layouts = Vec::new();
    for (output, flag) in [("bits_dw4", "-gdwarf-4"), ("bits_dw5", "-gdwarf-5")] {
        let Some(path) = build(
            "gcc",
            output,
            &[("main.c", MAIN_C), ("other.c", OTHER_C)],
            &["-O2", flag],
        ) else {
            return;
        };
        let bytes = read(&path);
        let image = load_ok(&bytes).image;
        layouts.push(
            image
                .types
                .iter()
                .find(|t| t.name == "session")
                .cloned()
                .expect("struct session"),
        );
    }
    assert_eq!(layouts.first(), layouts.get(1));
}

#[test]
fn lines_and_inline_sites() {
    let Some(bytes) = main_o2() else { return };
    let image = load_ok(bytes).image;
    assert!(!image.lines.is_empty());
    assert!(
        image
            .source_files
            .iter()
            .any(|f| f.ends_with("/main.c") && f.starts_with('/'))
    );
    for row in &image.lines {
        assert!(image.source_files.get(row.file as usize).is_some());
    }
    let compute = function_named(&image, "compute");
    let compute_rows = image
        .lines
        .iter()
        .filter(|row| row.rva >= compute.rva && row.rva < compute.end())
        .count();
    assert!(compute_rows > 0);
    // `helper` and `sq` are inlined into `compute` at -O2.
    let inlinees: Vec<&str> = image
        .inline_sites
        .iter()
        .filter(|site| site.caller_rva == compute.rva)
        .map(|site| site.inlinee.as_str())
        .collect();
    assert!(inlinees.contains(&"sq"), "{inlinees:?}");
}

#[test]
fn imports_relocations_unwind_and_initializers() {
    let Some(bytes) = main_o2() else { return };
    let image = load_ok(bytes).image;
    assert!(
        image
            .imports
            .iter()
            .any(|i| i.name == "printf" && i.library == "libc.so.6")
    );
    assert!(
        image
            .relocations
            .iter()
            .all(|r| r.origin == RelocationOrigin::Dynamic)
    );
    assert!(
        image
            .relocations
            .iter()
            .any(|r| r.kind == RelocationType::ELF_RELATIVE)
    );
    assert!(
        image
            .relocations
            .iter()
            .any(|r| r.kind == RelocationType::ELF_GLOB_DAT && r.symbol.is_some())
    );
    // In a PIE the constructor slot holds 0 and a RELATIVE relocation names the target.
    let init_me = function_named(&image, "init_me");
    assert!(image.initializers.iter().any(|i| i.table
        == InitializerTable::ElfSection(".init_array".into())
        && i.target_rva == init_me.rva
        && i.target.as_deref() == Some("init_me")));
    let compute = function_named(&image, "compute");
    assert!(
        image
            .unwind
            .iter()
            .any(|u| u.begin == compute.rva && u.end == compute.end())
    );
}

#[test]
fn emit_relocs_keeps_static_relocations() {
    let Some(path) = build(
        "gcc",
        "emit_relocs",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O2", "-g", "-Wl,--emit-relocs"],
    ) else {
        return;
    };
    let bytes = read(&path);
    let image = load_ok(&bytes).image;
    let main = function_named(&image, "main");
    let in_main: Vec<(RelocationType, Option<&str>)> = image
        .relocations
        .iter()
        .filter(|r| r.origin == RelocationOrigin::Static && r.rva >= main.rva && r.rva < main.end())
        .map(|r| (r.kind, r.symbol.as_deref()))
        .collect();
    let plt32 = RelocationType::Elf(object::elf::R_X86_64_PLT32);
    assert!(in_main.contains(&(plt32, Some("other"))), "{in_main:?}");
    let tpoff32 = RelocationType::Elf(object::elf::R_X86_64_TPOFF32);
    assert!(in_main.iter().any(|(kind, _)| *kind == tpoff32));
}

#[test]
fn cpp_names_are_qualified() {
    let Some(path) = build(
        "g++",
        "classes",
        &[("classes.cpp", CLASSES_CPP)],
        &["-O2", "-g"],
    ) else {
        return;
    };
    let bytes = read(&path);
    let loaded = load_ok(&bytes);
    let image = &loaded.image;
    let compute = function_named(image, "_ZN3app6Widget7computeEi");
    assert_eq!(compute.display_name, "app::Widget::compute");
    assert_eq!(compute.linkage, Linkage::Global);
    let widget = image
        .types
        .iter()
        .find(|t| t.name == "app::Widget")
        .expect("class app::Widget");
    assert_eq!(widget.kind, TypeKind::Class);
    let names: Vec<&str> = widget.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["<base struct app::Base>", "value", "scale"]);
    let instances = image
        .data_symbols
        .iter()
        .find(|d| d.name == "_ZN3app6Widget9instancesE")
        .expect("static member");
    assert_eq!(instances.type_name.as_deref(), Some("int"));
    if let Some(expected) = binutils_functions(&path) {
        assert_eq!(model_functions(image), expected);
    }
}

#[test]
fn separate_debug_file_is_matched_by_build_id() {
    if !tool_available("objcopy") {
        return;
    }
    let Some(path) = build(
        "gcc",
        "split",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O2", "-g"],
    ) else {
        return;
    };
    let debug_path = path.with_extension("debug");
    let stripped_path = path.with_extension("stripped");
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("objcopy")
            .args(args)
            .status()
            .expect("objcopy");
        assert!(status.success());
    };
    objcopy(&[
        "--only-keep-debug".as_ref(),
        path.as_os_str(),
        debug_path.as_os_str(),
    ]);
    objcopy(&[
        "--strip-all".as_ref(),
        path.as_os_str(),
        stripped_path.as_os_str(),
    ]);
    let whole = read(&path);
    let debug = read(&debug_path);
    let stripped = read(&stripped_path);

    let stripped_alone = load_ok(&stripped).image;
    assert_eq!(stripped_alone.debug_info, crate::DebugInfoSource::None);
    assert!(stripped_alone.types.is_empty());

    let reference = load_ok(&whole).image;
    let split = load(&stripped, Some(&debug))
        .expect("matching debug file")
        .image;
    assert_eq!(split.debug_info, crate::DebugInfoSource::Dwarf);
    assert_eq!(model_functions(&split), model_functions(&reference));
    assert_eq!(split.types, reference.types);
    assert_eq!(split.lines, reference.lines);
    assert_eq!(split.data_symbols, reference.data_symbols);
    assert_eq!(split.inline_sites, reference.inline_sites);
    for (a, b) in split.functions.iter().zip(&reference.functions) {
        assert_eq!(
            (&a.display_name, &a.compile_unit, a.has_debug_info, a.code),
            (&b.display_name, &b.compile_unit, b.has_debug_info, b.code)
        );
    }

    // Another build's debug file, a missing build-id and a non-ELF file are all refused.
    let Some(other_path) = build(
        "gcc",
        "split_other",
        &[("other.c", OTHER_C), ("main.c", MAIN_C)],
        &["-O1", "-g"],
    ) else {
        return;
    };
    let other = read(&other_path);
    assert!(matches!(
        load(&stripped, Some(&other)),
        Err(Error::DebugMismatch { .. })
    ));
    assert!(matches!(
        load(&stripped, Some(b"Microsoft C/C++ MSF 7.00\r\n")),
        Err(Error::WrongDebugFormat { .. })
    ));
    let no_build_id_path = path.with_extension("nobuildid");
    objcopy(&[
        "--remove-section=.note.gnu.build-id".as_ref(),
        stripped_path.as_os_str(),
        no_build_id_path.as_os_str(),
    ]);
    let no_build_id = read(&no_build_id_path);
    assert!(matches!(
        load(&no_build_id, Some(&debug)),
        Err(Error::NoBuildId {
            which: "the binary"
        })
    ));
    assert!(matches!(
        load(&debug, Some(&no_build_id)),
        Err(Error::NoBuildId {
            which: "the debug file"
        })
    ));
}

#[test]
fn compressed_debug_sections_read_like_plain_ones() {
    let Some(plain_path) = build(
        "gcc",
        "plain",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O2", "-g"],
    ) else {
        return;
    };
    let Some(compressed_path) = build(
        "gcc",
        "compressed",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O2", "-g", "-gz"],
    ) else {
        return;
    };
    let plain = read(&plain_path);
    let compressed = read(&compressed_path);
    let plain = load_ok(&plain).image;
    let compressed = load_ok(&compressed).image;
    assert!(!plain.types.is_empty());
    assert_eq!(compressed.types, plain.types);
    assert_eq!(compressed.lines, plain.lines);
    assert_eq!(compressed.inline_sites, plain.inline_sites);
}

#[test]
fn other_kinds_of_file_are_named() {
    let Some(bytes) = main_o2() else { return };
    let unsupported = |bytes: &[u8]| match load(bytes, None) {
        Err(Error::Unsupported { what }) => what,
        other => panic!("expected Unsupported, got {other:?}"),
    };
    let mut aarch64 = bytes.to_vec();
    aarch64[18..20].copy_from_slice(&object::elf::EM_AARCH64.to_le_bytes());
    assert_eq!(unsupported(&aarch64), "ELF machine EM_AARCH64");
    let mut elf32 = bytes.to_vec();
    elf32[4] = object::elf::ELFCLASS32;
    assert_eq!(unsupported(&elf32), "32-bit ELF");
    let mut big_endian = bytes.to_vec();
    big_endian[5] = object::elf::ELFDATA2MSB;
    assert_eq!(unsupported(&big_endian), "big-endian ELF");
    let mut relocatable = bytes.to_vec();
    relocatable[16..18].copy_from_slice(&object::elf::ET_REL.to_le_bytes());
    assert_eq!(unsupported(&relocatable), "relocatable ELF object (ET_REL)");
    assert!(matches!(load(&[], None), Err(Error::Empty)));
    assert!(matches!(
        load(b"\x7fELF", None),
        Err(Error::Malformed { format: "ELF", .. })
    ));
}

#[test]
fn truncated_files_never_panic() {
    let Some(bytes) = main_o2() else { return };
    for len in (0..bytes.len()).step_by(64) {
        let _ = load(&bytes[..len], None);
    }
}

/// A small deterministic generator, so a failure reproduces.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let Some(bytes) = main_o2() else { return };
    let mut random = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..600 {
        let mut mutated = bytes.to_vec();
        for _ in 0..1 + random.below(8) {
            let at = random.below(mutated.len());
            mutated[at] ^= 1 << random.below(8);
        }
        let _ = load(&mutated, None);
    }
}

#[test]
fn corrupted_debug_and_unwind_sections_never_panic() {
    let Some(bytes) = main_o2() else { return };
    let file = super::ElfFile::parse(bytes).expect("parse");
    let table = file.elf_section_table();
    let facts = super::section_facts(table);
    let targets: Vec<(usize, usize)> = facts
        .iter()
        .filter(|s| s.name.starts_with(".debug_") || s.name == ".eh_frame")
        .filter_map(|s| {
            let start = usize::try_from(s.offset).ok()?;
            Some((start, usize::try_from(s.size).ok()?))
        })
        .filter(|&(_, size)| size > 0)
        .collect();
    let mut random = XorShift(0x0123_4567_89ab_cdef);
    let mut diagnostics_seen = 0;
    for _ in 0..1500 {
        let mut mutated = bytes.to_vec();
        let (start, size) = targets[random.below(targets.len())];
        for _ in 0..1 + random.below(4) {
            let at = start + random.below(size);
            mutated[at] = random.next() as u8;
        }
        if let Ok(loaded) = load(&mutated, None) {
            diagnostics_seen += usize::from(!loaded.diagnostics.is_empty());
        }
    }
    // Damage in DWARF is reported, not fatal.
    assert!(diagnostics_seen > 0);
}

#[test]
fn type_units_give_the_same_layouts_and_names() {
    let flavours: [(&str, &[&str]); 3] = [
        ("tu_plain", &["-O2", "-gdwarf-4"]),
        ("tu_dw4", &["-O2", "-gdwarf-4", "-fdebug-types-section"]),
        ("tu_dw5", &["-O2", "-gdwarf-5", "-fdebug-types-section"]),
    ];
    let mut seen = Vec::new();
    for (output, flags) in flavours {
        let Some(c_path) = build(
            "gcc",
            output,
            &[("main.c", MAIN_C), ("other.c", OTHER_C)],
            flags,
        ) else {
            return;
        };
        let cpp_output = format!("{output}_cpp");
        let Some(cpp_path) = build("g++", &cpp_output, &[("classes.cpp", CLASSES_CPP)], flags)
        else {
            return;
        };
        let c_bytes = read(&c_path);
        let cpp_bytes = read(&cpp_path);
        let c = load_ok(&c_bytes);
        let cpp = load_ok(&cpp_bytes);
        assert!(c.diagnostics.is_empty(), "{output}: {:?}", c.diagnostics);
        let session = c
            .image
            .types
            .iter()
            .find(|t| t.name == "session")
            .cloned()
            .expect("struct session");
        let session_type = c
            .image
            .data_symbols
            .iter()
            .find(|d| d.name == "g_session")
            .and_then(|d| d.type_name.clone());
        let widget = cpp
            .image
            .types
            .iter()
            .find(|t| t.name == "app::Widget")
            .cloned()
            .expect("class app::Widget");
        seen.push((session, session_type, widget));
    }
    for other in seen.iter().skip(1) {
        assert_eq!(Some(other), seen.first());
    }
}

#[test]
fn a_forged_decompressed_size_is_refused_not_allocated() {
    let Some(path) = build(
        "gcc",
        "forged_size",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O2", "-g", "-gz"],
    ) else {
        return;
    };
    let mut bytes = read(&path);
    let file = super::ElfFile::parse(&*bytes).expect("parse");
    let facts = super::section_facts(file.elf_section_table());
    let debug_info = facts
        .iter()
        .find(|s| s.name == ".debug_info")
        .expect(".debug_info");
    assert_ne!(debug_info.flags & u64::from(object::elf::SHF_COMPRESSED), 0);
    // Elf64_Chdr: ch_type (4), ch_reserved (4), ch_size (8).
    let ch_size = usize::try_from(debug_info.offset).expect("offset") + 8;
    drop(file);
    bytes[ch_size..ch_size + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let loaded = load_ok(&bytes);
    assert!(
        loaded.diagnostics.iter().any(|d| d.location
            == DiagnosticLocation::Section(".debug_info".into())
            && d.message.contains("decompress")),
        "{:?}",
        loaded.diagnostics
    );
    // The symbol table does not depend on DWARF.
    assert!(loaded.image.functions.iter().any(|f| f.name == "compute"));
}

#[test]
fn lto_references_across_units_are_followed() {
    let Some(path) = build(
        "gcc",
        "lto",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O2", "-g", "-flto"],
    ) else {
        return;
    };
    let bytes = read(&path);
    let loaded = load_ok(&bytes);
    assert!(loaded.diagnostics.is_empty(), "{:?}", loaded.diagnostics);
    let image = &loaded.image;
    // LTO inlines everything into `main`; the inlinees' names live in the early-debug units.
    let main = function_named(image, "main");
    let mut inlinees: Vec<&str> = image
        .inline_sites
        .iter()
        .filter(|site| site.caller_rva == main.rva)
        .map(|site| site.inlinee.as_str())
        .collect();
    inlinees.sort_unstable();
    inlinees.dedup();
    assert!(!inlinees.is_empty());
    assert!(!inlinees.contains(&"<unknown>"), "{inlinees:?}");
    // The code lives in an `<artificial>` unit; the unit that declares it is the source file.
    assert_eq!(main.compile_unit.as_deref().map(file_name), Some("main.c"));
    let tls_buf = image
        .data_symbols
        .iter()
        .find(|d| d.name == "tls_buf")
        .expect("tls_buf");
    assert_eq!(tls_buf.type_name.as_deref(), Some("char[32]"));
    assert_eq!(
        tls_buf.compile_unit.as_deref().map(file_name),
        Some("main.c")
    );
    if let Some(expected) = binutils_functions(&path) {
        assert_eq!(model_functions(image), expected);
    }

    // Without inlining, the two static `helper`s stay apart, each with its own unit.
    let Some(path) = build(
        "gcc",
        "lto_no_inline",
        &[("main.c", MAIN_C), ("other.c", OTHER_C)],
        &["-O1", "-g", "-flto", "-fno-inline"],
    ) else {
        return;
    };
    let bytes = read(&path);
    let image = load_ok(&bytes).image;
    let mut helpers: Vec<(&str, &str)> = image
        .functions
        .iter()
        .filter(|f| f.display_name == "helper")
        .map(|f| {
            (
                f.compile_unit.as_deref().map_or("", file_name),
                f.name.as_str(),
            )
        })
        .collect();
    helpers.sort_unstable();
    assert_eq!(helpers.len(), 2, "{helpers:?}");
    assert_eq!(helpers.first().map(|h| h.0), Some("main.c"));
    assert_eq!(helpers.get(1).map(|h| h.0), Some("other.c"));
}
