//! Compiles bpf/synwall.bpf.c (the datapath: XDP steering and the TC
//! hand-off) into a libbpf-rs skeleton (OUT_DIR/synwall.skel.rs). Needs
//! clang and the kernel UAPI headers (scripts/setup.sh installs both).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // <linux/*.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory of the host.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    let src = "bpf/synwall.bpf.c";
    // The object itself too: attach = "libxdp" loads its XDP program a
    // second time, as a dispatcher's extension (src/xdp/libxdp.rs).
    if let Err(e) = SkeletonBuilder::new()
        .source(src)
        .obj(out_dir.join("synwall.bpf.o"))
        .clang_args([multiarch.as_str(), "-Ibpf", "-Wall"])
        .build_and_generate(out_dir.join("synwall.skel.rs"))
    {
        panic!("building {src} failed (is clang installed? run scripts/setup.sh): {e:#}");
    }
    println!("cargo:rerun-if-changed=bpf");
}
