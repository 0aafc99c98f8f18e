//! Compiles bpf/synwall.bpf.c into a libbpf-rs skeleton (OUT_DIR/synwall.skel.rs).
//! Needs clang and the kernel UAPI headers (scripts/setup.sh installs both).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out =
        PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("synwall.skel.rs");
    // <linux/*.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory of the host.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    if let Err(e) = SkeletonBuilder::new()
        .source("bpf/synwall.bpf.c")
        .clang_args([multiarch.as_str(), "-Ibpf", "-Wall"])
        .build_and_generate(&out)
    {
        panic!(
            "building bpf/synwall.bpf.c failed (is clang installed? run scripts/setup.sh): {e:#}"
        );
    }
    println!("cargo:rerun-if-changed=bpf");
}
