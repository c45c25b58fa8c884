#!/usr/bin/env bash
# Rebuilds the table of docs/accuracy.md: fetches each program's source from a package
# registry, builds the baseline (upstream release) and the fixed build (the same release plus
# the one security patch) both ways (gcc ELF + DWARF; clang/lld mingw-w64 PE + PDB), and runs
# `hotpatch diff` and `hotpatch check` on each pair.
#
# Usage: docs/accuracy/rebuild.sh [CASE...]   (cases: lua-33099 lua-28805 zlib-37434 expat-45490)
# Env:   TRIALS   scratch directory outside the repo (default /work/trials)
#        HOTPATCH the CLI (default: target/release/hotpatch of this checkout)
#        REUSE=1  keep builds already in $TRIALS/out (only re-run hotpatch)
# Needs: apt-get (deb-src enabled for bookworm and bookworm-security), cargo, gcc, clang, lld,
#        mingw-w64, patch. Results go to $TRIALS/results/<case>.<format>.{diff,check,json}.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
TRIALS=${TRIALS:-/work/trials}
HOTPATCH=${HOTPATCH:-$REPO/target/release/hotpatch}
SRC=$TRIALS/src
OUT=$TRIALS/out
RES=$TRIALS/results
mkdir -p "$SRC" "$OUT" "$RES"

# The same flags as the project's fixtures (GUIDE.md), so the builds are those a user makes.
ELF_CC=(gcc -O2 -g)
PE_CC=(clang --target=x86_64-w64-mingw32 -O2 -g -gcodeview -fuse-ld=lld
       -L/usr/lib/gcc/x86_64-w64-mingw32/12-win32)

fetch_debian() { # fetch_debian PKG=VERSION -> unpacked debian/ of that version in $SRC/PKG-debian
  local spec=$1 pkg=${1%%=*}
  if [ ! -d "$SRC/$pkg-debian" ]; then
    (cd "$SRC" && apt-get source --download-only "$spec" >/dev/null 2>&1) || {
      echo "apt-get source $spec failed: add a deb-src line for bookworm and bookworm-security, then apt-get update" >&2
      exit 2
    }
    mkdir -p "$SRC/$pkg-debian"
    tar xJf "$SRC/${pkg}_${spec#*=}.debian.tar.xz" -C "$SRC/$pkg-debian"
  fi
}

fetch_libz_sys() { # zlib 1.2.11 as bundled by the crate libz-sys 1.1.8
  if [ ! -d "$SRC/zlib-1.2.11" ]; then
    local scratch=$SRC/libz-sys-vendor
    mkdir -p "$scratch/src"
    printf '[package]\nname = "zfetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nlibz-sys = { version = "=1.1.8", features = ["static"] }\n' >"$scratch/Cargo.toml"
    touch "$scratch/src/lib.rs"
    (cd "$scratch" && cargo vendor --versioned-dirs vendor >/dev/null)
    cp -r "$scratch/vendor/libz-sys-1.1.8/src/zlib" "$SRC/zlib-1.2.11"
  fi
}

# mktree NAME TARBALL-OR-DIR [PATCH P] -> a fresh tree at $TRIALS/tree/NAME (the same path for the
# baseline and the fixed build, so that no path recorded in the debug information differs).
mktree() {
  local name=$1 from=$2 patchfile=${3:-} strip=${4:-1}
  rm -rf "$TRIALS/tree/$name"
  mkdir -p "$TRIALS/tree/$name"
  if [ -d "$from" ]; then
    cp -r "$from/." "$TRIALS/tree/$name/"
  else
    tar xzf "$from" -C "$TRIALS/tree/$name" --strip-components=1
  fi
  if [ -n "$patchfile" ]; then
    patch -s -d "$TRIALS/tree/$name" -p"$strip" <"$patchfile"
  fi
}

build_lua() { # build_lua SIDE: the interpreter `lua` (all of liblua linked in), as Lua's Makefile
  local t=$TRIALS/tree/lua o=$OUT/$CASE/$1
  local srcs
  srcs=$(cd "$t/src" && ls *.c | grep -v '^luac\.c$' | sort)
  mkdir -p "$o"
  (cd "$t/src" && "${ELF_CC[@]}" -fPIE -pie -DLUA_COMPAT_5_3 -DLUA_USE_LINUX -Wl,-E \
    -o "$o/lua" $srcs -lm -ldl)
  (cd "$t/src" && "${PE_CC[@]}" -DLUA_COMPAT_5_3 -Wl,--pdb="$o/lua.pdb" \
    -o "$o/lua.exe" $srcs)
}

build_zlib() { # build_zlib SIDE: the shared library, as zlib's configure (libz.so.1) and win32 (zlib1.dll)
  local t=$TRIALS/tree/zlib o=$OUT/$CASE/$1
  local srcs="adler32.c compress.c crc32.c deflate.c gzclose.c gzlib.c gzread.c gzwrite.c infback.c inffast.c inflate.c inftrees.c trees.c uncompr.c zutil.c"
  mkdir -p "$o"
  (cd "$t" && "${ELF_CC[@]}" -fPIC -shared -D_LARGEFILE64_SOURCE=1 -DHAVE_HIDDEN \
    -Wl,-soname,libz.so.1 -Wl,--version-script,zlib.map -o "$o/libz.so.1" $srcs)
  (cd "$t" && "${PE_CC[@]}" -shared -Wl,--pdb="$o/zlib1.pdb" -o "$o/zlib1.dll" $srcs win32/zlib.def)
}

build_expat() { # build_expat SIDE: the shared library libexpat (lib/xmlparse.c xmltok.c xmlrole.c)
  local t=$TRIALS/tree/expat/expat o=$OUT/$CASE/$1
  mkdir -p "$o"
  # The handful of settings configure/CMake would write (the defaults: XML_DTD, XML_NS,
  # XML_GE, 1024 context bytes); entropy from getrandom on Linux, rand_s on Windows.
  cat >"$t/lib/expat_config.h" <<'EOF'
#define BYTEORDER 1234
#define XML_CONTEXT_BYTES 1024
#define XML_DTD 1
#define XML_NS 1
#define XML_GE 1
#define HAVE_STDLIB_H 1
#define HAVE_STRING_H 1
#ifndef _WIN32
#define HAVE_GETRANDOM 1
#define HAVE_SYSCALL_GETRANDOM 1
#define HAVE_UNISTD_H 1
#endif
EOF
  local srcs="xmlparse.c xmltok.c xmlrole.c"
  (cd "$t/lib" && "${ELF_CC[@]}" -fPIC -shared -I. -DHAVE_EXPAT_CONFIG_H -fvisibility=hidden \
    -DXML_ENABLE_VISIBILITY=1 -Wl,-soname,libexpat.so.1 -o "$o/libexpat.so.1" $srcs)
  (cd "$t/lib" && "${PE_CC[@]}" -shared -I. -DHAVE_EXPAT_CONFIG_H \
    -Wl,--pdb="$o/libexpat.pdb" -o "$o/libexpat.dll" $srcs)
}

run_pair() { # run_pair FORMAT BASE FIXED
  local fmt=$1 base=$2 fixed=$3 tag=$RES/$CASE.$1
  "$HOTPATCH" diff "$base" "$fixed" >"$tag.diff" 2>&1 || true
  "$HOTPATCH" diff "$base" "$fixed" --disasm >"$tag.disasm" 2>&1 || true
  local rc=0
  "$HOTPATCH" check "$base" "$fixed" >"$tag.check" 2>&1 || rc=$?
  "$HOTPATCH" check "$base" "$fixed" --json >"$tag.json" 2>/dev/null || true
  printf '%-12s %-4s exit=%-3s %s\n' "$CASE" "$fmt" "$rc" "$(grep -m1 -i 'verdict' "$tag.check" || head -1 "$tag.check")"
}

case_lua() { # case_lua CVE-PATCH-NAME: Lua 5.4.4 (Debian lua5.4 5.4.4-3+deb12u1)
  if [ "${REUSE:-0}" != 1 ] || [ ! -e "$OUT/$CASE/fixed/.done" ]; then
    fetch_debian lua5.4=5.4.4-3+deb12u1
    mktree lua "$SRC/lua5.4_5.4.4.orig.tar.gz"
    build_lua base
    mktree lua "$SRC/lua5.4_5.4.4.orig.tar.gz" "$SRC/lua5.4-debian/debian/patches/$1" 1
    build_lua fixed
    touch "$OUT/$CASE/fixed/.done"
  fi
  run_pair elf "$OUT/$CASE/base/lua" "$OUT/$CASE/fixed/lua"
  run_pair pe "$OUT/$CASE/base/lua.exe" "$OUT/$CASE/fixed/lua.exe"
}

case_zlib_37434() { # zlib 1.2.11 (crate libz-sys 1.1.8) + upstream commit eff308a
  if [ "${REUSE:-0}" != 1 ] || [ ! -e "$OUT/$CASE/fixed/.done" ]; then
    fetch_libz_sys
    mktree zlib "$SRC/zlib-1.2.11"
    build_zlib base
    mktree zlib "$SRC/zlib-1.2.11" "$HERE/zlib-CVE-2022-37434.patch" 1
    build_zlib fixed
    touch "$OUT/$CASE/fixed/.done"
  fi
  run_pair elf "$OUT/$CASE/base/libz.so.1" "$OUT/$CASE/fixed/libz.so.1"
  run_pair pe "$OUT/$CASE/base/zlib1.dll" "$OUT/$CASE/fixed/zlib1.dll"
}

case_expat_45490() { # expat 2.5.0 (Debian expat 2.5.0-1+deb12u2) + CVE-2024-45490.patch
  if [ "${REUSE:-0}" != 1 ] || [ ! -e "$OUT/$CASE/fixed/.done" ]; then
    fetch_debian expat=2.5.0-1+deb12u2
    mktree expat "$SRC/expat_2.5.0.orig.tar.gz"
    build_expat base
    mktree expat "$SRC/expat_2.5.0.orig.tar.gz" "$SRC/expat-debian/debian/patches/CVE-2024-45490.patch" 1
    build_expat fixed
    touch "$OUT/$CASE/fixed/.done"
  fi
  run_pair elf "$OUT/$CASE/base/libexpat.so.1" "$OUT/$CASE/fixed/libexpat.so.1"
  run_pair pe "$OUT/$CASE/base/libexpat.dll" "$OUT/$CASE/fixed/libexpat.dll"
}

[ -x "$HOTPATCH" ] || { echo "build the CLI first: cargo build --release -p hotpatch" >&2; exit 2; }
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(lua-33099 lua-28805 zlib-37434 expat-45490)
for CASE in "${cases[@]}"; do
  case $CASE in
  lua-33099) case_lua 0005-cve-2022-33099.patch ;;
  lua-28805) case_lua 0004-cve-2022-28805.patch ;;
  zlib-37434) case_zlib_37434 ;;
  expat-45490) case_expat_45490 ;;
  *) echo "unknown case $CASE" >&2; exit 2 ;;
  esac
done
