/* Test-only shim for Wine 8, whose bcryptprimitives.dll is missing (or lacks ProcessPrng):
 * Rust's std on Windows calls ProcessPrng for its random seeds, so a Rust program such as
 * hotpatch-apply.exe does not start under Wine without it. Placed beside the .exe by
 * `cargo xtask test-windows`; forwards to SystemFunction036 (RtlGenRandom) in advapi32.
 * Never shipped: real Windows 10 and later has ProcessPrng. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
