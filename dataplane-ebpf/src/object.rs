//! What every eBPF object of this crate needs besides its programs: the license section (GPL,
//! which the helpers the programs call require) and a panic handler. Each binary's root
//! includes it with `mod object;` (and has an empty `main` for host builds, which lint and
//! check the crate's logic).

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// SAFETY (of the two attributes): a plain byte array, in the section the loader reads the
// license from, under a name nothing else in the object uses.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
