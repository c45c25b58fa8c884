//! A small ELF loader for tests: maps a position-independent executable's `PT_LOAD` segments
//! into this process at an address the kernel picks, applies its dynamic relocations
//! (`R_X86_64_RELATIVE`, and `GLOB_DAT`, `JUMP_SLOT`, `64` and `COPY` resolved against this
//! process with `dlsym`), and sets each page's protection from the segments' flags. It never runs the
//! program's initializers or `main`: the tests call single functions of the image, which is what
//! a hotpatch redirect needs of them. Symbol addresses come from the file's own symbol table
//! (read with `object`), independent of hotpatch's model.

use object::elf;
use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSymbol, ObjectSymbolTable, RelocationFlags, RelocationTarget};
use std::collections::BTreeMap;
use std::ffi::CString;

const PAGE: u64 = 4096;

/// An image mapped into this process; unmapped on drop.
pub struct LoadedImage {
    /// Where virtual address 0 of the file is mapped (`address(rva) = bias + rva`).
    pub bias: u64,
    len: usize,
    /// Every defined symbol of `.symtab` (functions and data, local ones too) by name, with
    /// its address and size.
    symbols: BTreeMap<String, (u64, u64)>,
}

impl LoadedImage {
    /// Maps and relocates the PIE in `bytes`.
    pub fn load(bytes: &[u8]) -> Result<LoadedImage, String> {
        let file = ElfFile64::<object::Endianness>::parse(bytes).map_err(|e| e.to_string())?;
        let endian = file.endian();
        if file.elf_header().e_type(endian) != elf::ET_DYN
            || file.elf_header().e_machine(endian) != elf::EM_X86_64
        {
            return Err("not an x86-64 position-independent ELF".into());
        }
        let segments: Vec<_> = file
            .elf_program_headers()
            .iter()
            .filter(|ph| ph.p_type(endian) == elf::PT_LOAD)
            .collect();
        let end = segments
            .iter()
            .map(|ph| ph.p_vaddr(endian) + ph.p_memsz(endian))
            .max()
            .ok_or("no PT_LOAD segment")?;
        let len = end.div_ceil(PAGE) * PAGE;
        let len = usize::try_from(len).map_err(|e| e.to_string())?;
        // SAFETY: a fresh anonymous private mapping at an address the kernel chooses; nothing
        // else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(format!("mmap: {}", std::io::Error::last_os_error()));
        }
        let image = LoadedImage {
            bias: base as u64,
            len,
            symbols: symbols(&file),
        };
        for ph in &segments {
            let data = ph
                .data(endian, bytes)
                .map_err(|()| "segment outside the file")?;
            image.write(ph.p_vaddr(endian), data);
        }
        image.relocate(&file)?;
        // Each page gets the union of the flags of the segments on it; this is what the
        // kernel's ELF loader gives a page two segments share.
        let mut pages: BTreeMap<u64, i32> = BTreeMap::new();
        for ph in &segments {
            let start = ph.p_vaddr(endian) / PAGE;
            let stop = (ph.p_vaddr(endian) + ph.p_memsz(endian)).div_ceil(PAGE);
            let flags = ph.p_flags(endian);
            let mut protection = 0;
            if flags & elf::PF_R != 0 {
                protection |= libc::PROT_READ;
            }
            if flags & elf::PF_W != 0 {
                protection |= libc::PROT_WRITE;
            }
            if flags & elf::PF_X != 0 {
                protection |= libc::PROT_EXEC;
            }
            for page in start..stop {
                *pages.entry(page).or_default() |= protection;
            }
        }
        for (page, protection) in pages {
            protect(image.bias + page * PAGE, PAGE as usize, protection)?;
        }
        Ok(image)
    }

    /// The address of a symbol of the file's `.symtab`.
    pub fn symbol(&self, name: &str) -> u64 {
        self.bias + self.symbol_rva_size(name).0
    }

    /// The size of a symbol of the file's `.symtab`.
    pub fn symbol_size(&self, name: &str) -> u64 {
        self.symbol_rva_size(name).1
    }

    fn symbol_rva_size(&self, name: &str) -> (u64, u64) {
        *self
            .symbols
            .get(name)
            .unwrap_or_else(|| panic!("no symbol {name} in the image"))
    }

    /// Copies `data` to `rva`, which must lie inside the mapping.
    fn write(&self, rva: u64, data: &[u8]) {
        assert!(rva as usize + data.len() <= self.len);
        // SAFETY: the range lies inside our own writable mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), (self.bias + rva) as *mut u8, data.len());
        }
    }

    fn write_u64(&self, rva: u64, value: u64) {
        self.write(rva, &value.to_le_bytes());
    }

    /// Applies every dynamic relocation, as `ld.so` would with `BIND_NOW`.
    fn relocate(&self, file: &ElfFile64<'_, object::Endianness>) -> Result<(), String> {
        let dynamic_symbols = file.dynamic_symbol_table().ok_or("no .dynsym")?;
        for (offset, relocation) in file.dynamic_relocations().ok_or("no dynamic relocations")? {
            let RelocationFlags::Elf { r_type } = relocation.flags() else {
                return Err(format!("{offset:#x}: not an ELF relocation"));
            };
            let addend = relocation.addend() as u64;
            let (symbol, symbol_size) = match relocation.target() {
                RelocationTarget::Symbol(index) => {
                    let symbol = dynamic_symbols
                        .symbol_by_index(index)
                        .map_err(|e| e.to_string())?;
                    let address = if symbol.is_undefined() || r_type == elf::R_X86_64_COPY {
                        let name = symbol.name().map_err(|e| e.to_string())?;
                        let address = lookup(name);
                        if address == 0 && !symbol.is_weak() {
                            return Err(format!("{name}: not found in the test process"));
                        }
                        address
                    } else {
                        self.bias + symbol.address()
                    };
                    (address, symbol.size())
                }
                _ => (0, 0),
            };
            let value = match r_type {
                elf::R_X86_64_COPY => {
                    // The executable's copy of a library variable (gcc's PIE reaches `stdout`
                    // this way). ld.so makes the library use that copy; here the library keeps
                    // its own, so the copy is a snapshot: right for a pointer such as `stdout`
                    // that never changes, which is all the fixtures copy.
                    let size = usize::try_from(symbol_size).map_err(|e| e.to_string())?;
                    // SAFETY: `symbol` is the address dlsym gave for a variable of that size.
                    let bytes = unsafe { std::slice::from_raw_parts(symbol as *const u8, size) };
                    self.write(offset, bytes);
                    continue;
                }
                elf::R_X86_64_RELATIVE => self.bias.wrapping_add(addend),
                elf::R_X86_64_GLOB_DAT | elf::R_X86_64_JUMP_SLOT => symbol,
                elf::R_X86_64_64 => symbol.wrapping_add(addend),
                other => {
                    return Err(format!(
                        "{offset:#x}: relocation type {other} not supported"
                    ));
                }
            };
            self.write_u64(offset, value);
        }
        Ok(())
    }

    /// Reads `N` bytes at an address inside the image.
    pub fn read<const N: usize>(&self, address: u64) -> [u8; N] {
        assert!(address >= self.bias && address + N as u64 <= self.bias + self.len as u64);
        let mut bytes = [0; N];
        // SAFETY: the range lies inside our readable mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(address as *const u8, bytes.as_mut_ptr(), N) };
        bytes
    }

    pub fn read_i64(&self, address: u64) -> i64 {
        i64::from_le_bytes(self.read(address))
    }

    /// Writes into the image's data (its pages must be writable).
    pub fn write_i64(&self, address: u64, value: i64) {
        self.write_bytes(address, &value.to_le_bytes());
    }

    /// Writes into the image's data (its pages must be writable).
    pub fn write_bytes(&self, address: u64, bytes: &[u8]) {
        assert!(address >= self.bias);
        self.write(address - self.bias, bytes);
    }

    /// Writes code bytes at `address`: the page is made writable for the write and then
    /// read-execute again (never writable and executable at once).
    pub fn patch_code(&self, address: u64, bytes: &[u8]) {
        let page = address & !(PAGE - 1);
        let len = (address + bytes.len() as u64 - page).div_ceil(PAGE) * PAGE;
        protect(page, len as usize, libc::PROT_READ | libc::PROT_WRITE).unwrap();
        self.write(address - self.bias, bytes);
        protect(page, len as usize, libc::PROT_READ | libc::PROT_EXEC).unwrap();
    }

    /// The start and the end of the mapping.
    pub fn range(&self) -> (u64, u64) {
        (self.bias, self.bias + self.len as u64)
    }
}

impl Drop for LoadedImage {
    fn drop(&mut self) {
        // SAFETY: our own mapping; the test no longer calls into it.
        unsafe { libc::munmap(self.bias as *mut libc::c_void, self.len) };
    }
}

/// Every defined symbol of `.symtab` by name (the first one of a name wins).
fn symbols(file: &ElfFile64<'_, object::Endianness>) -> BTreeMap<String, (u64, u64)> {
    let mut symbols = BTreeMap::new();
    for symbol in file.symbols() {
        if symbol.is_undefined() || symbol.address() == 0 {
            continue;
        }
        if let Ok(name) = symbol.name() {
            symbols
                .entry(name.to_owned())
                .or_insert((symbol.address(), symbol.size()));
        }
    }
    symbols
}

/// The address of `name` in this process (`dlsym(RTLD_DEFAULT)`), 0 when there is none.
fn lookup(name: &str) -> u64 {
    let Ok(name) = CString::new(name) else {
        return 0;
    };
    // SAFETY: dlsym reads a NUL-terminated string and returns an address or null.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as u64 }
}

pub fn protect(address: u64, len: usize, protection: i32) -> Result<(), String> {
    // SAFETY: callers pass page-aligned ranges of mappings this test owns.
    let result = unsafe { libc::mprotect(address as *mut libc::c_void, len, protection) };
    if result != 0 {
        return Err(format!("mprotect: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}
