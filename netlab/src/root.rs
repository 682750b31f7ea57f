//! Tests that need root: skipped with a message for an ordinary user, required where the
//! whole suite is meant to run (`cargo xtask test` sets [`REQUIRE_ENV`]), so that a run that
//! should exercise them can never pass by skipping them.

/// Set (to anything) to make a root test fail, instead of skip, when not run as root.
pub const REQUIRE_ENV: &str = "DATAPLANE_REQUIRE_ROOT_TESTS";

/// True if the calling test may go on: it runs as root. Otherwise says why it is skipped
/// (or panics, when [`REQUIRE_ENV`] is set) and returns false. The test is named by its thread,
/// which the test harness names after it.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes nothing and always succeeds.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("this test");
    assert!(
        std::env::var_os(REQUIRE_ENV).is_none(),
        "{test} needs root (it creates network namespaces and loads eBPF), and {REQUIRE_ENV} \
         asks for every root test to run"
    );
    eprintln!("skipped {test}: needs root (run the whole suite with `cargo xtask test` as root)");
    false
}

/// Returns from the calling test, saying why, unless it runs as root (see [`is_root`]).
#[macro_export]
macro_rules! root_or_skip {
    () => {
        if !$crate::root::is_root() {
            return;
        }
    };
}
