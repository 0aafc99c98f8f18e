//! Compiles the bench kit's BPF programs into libbpf-rs skeletons
//! (OUT_DIR/<name>.skel.rs): bench/bpf/flood.bpf.c (the live-frames flood
//! generator) and bench/bpf/testbed.bpf.c (the testbed's limit programs and
//! the client-side sink). Needs clang and the kernel UAPI headers
//! (scripts/setup.sh installs both).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // <linux/*.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory of the host.
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for name in ["flood", "testbed"] {
        let src = format!("bpf/{name}.bpf.c");
        if let Err(e) = SkeletonBuilder::new()
            .source(&src)
            .clang_args([multiarch.as_str(), "-Wall"])
            .build_and_generate(out_dir.join(format!("{name}.skel.rs")))
        {
            panic!("building {src} failed (is clang installed? run scripts/setup.sh): {e:#}");
        }
    }
    println!("cargo:rerun-if-changed=bpf");
}
