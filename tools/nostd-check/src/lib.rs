//! Links goldcrest-core into a `no_std` staticlib: std or alloc anywhere in its tree fails the build.
#![no_std]

pub use goldcrest_core as _core;

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
