//! An owned Win32 handle, closed when dropped, so that every early return releases it.

use windows_sys::Win32::Foundation::{CloseHandle, HANDLE, INVALID_HANDLE_VALUE};

/// A handle this applier opened.
#[derive(Debug)]
pub struct Handle(pub HANDLE);

impl Handle {
    /// Wraps the result of an opening call; `None` for a null or invalid handle (the caller
    /// reads `GetLastError` through `std::io::Error::last_os_error`).
    pub fn new(raw: HANDLE) -> Option<Handle> {
        (!raw.is_null() && raw != INVALID_HANDLE_VALUE).then_some(Handle(raw))
    }

    pub fn raw(&self) -> HANDLE {
        self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was returned open by the OS and is closed exactly once, here.
        unsafe {
            CloseHandle(self.0);
        }
    }
}
