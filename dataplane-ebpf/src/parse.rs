//! Bounds-checked access to packet bytes: the one accessor every parser goes through.
use core::mem::size_of;

/// A pointer to a `T` at `offset` from `data`, or `None` if it would reach past `data_end`.
/// The comparison is written so that the verifier sees the bound on the pointer it checks.
#[inline(always)]
pub fn ptr_at<T>(data: usize, data_end: usize, offset: usize) -> Option<*mut T> {
    let start = data + offset;
    if start + size_of::<T>() > data_end {
        return None;
    }
    Some(start as *mut T)
}
