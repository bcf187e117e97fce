//! Build script: finds libfabric with pkg-config and compiles the C shim over its inline `fi_*` calls.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/sys/shim.c");
    println!("cargo:rerun-if-env-changed=NA_NO_LIBFABRIC");
    println!("cargo:rustc-check-cfg=cfg(na_no_libfabric)");
    let found = if std::env::var_os("NA_NO_LIBFABRIC").is_some() {
        None
    } else {
        pkg_config::Config::new()
            .atleast_version("1.17")
            .probe("libfabric")
            .ok()
    };
    let Some(lib) = found else {
        // The crate still builds (inproc works) so the layers above can be tested; the ofi plugin
        // then fails at init with ProtoNoSupport and its tests skip, or fail under CI=true.
        println!(
            "cargo:warning=libfabric >= 1.17 not found by pkg-config: the ofi plugin is disabled \
             (run scripts/setup.sh to install libfabric-dev)"
        );
        println!("cargo:rustc-cfg=na_no_libfabric");
        return;
    };
    let mut build = cc::Build::new();
    build.file(Path::new("src/sys/shim.c")).warnings(true);
    for inc in &lib.include_paths {
        build.include(inc);
    }
    build.compile("na_ofi_shim");
    // After the shim, so a static link of the shim finds libfabric's symbols.
    println!("cargo:rustc-link-lib=fabric");
}
