//! Build script. The BPF programs (bpf/*.bpf.c) are compiled into libbpf-rs
//! skeletons here once the datapath lands; until then it only declares that
//! the BPF sources and the cookie test vectors are inputs of the build.
fn main() {
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=build.rs");
}
