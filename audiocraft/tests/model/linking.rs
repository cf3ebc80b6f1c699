//! The binaries that run models must need `libtorch_cuda.so` whenever the
//! libtorch they link has it: the linker's `--as-needed` would otherwise
//! drop it, and CUDA would be invisible on a GPU machine (see `build.rs`).
//! Read off the binary's dynamic section, so this runs on a CPU machine.

use std::path::Path;
use std::process::Command;

/// The NEEDED entries of `binary`'s dynamic section, read by `readelf -d`.
fn needed_libraries(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf (binutils) runs");
    assert!(out.status.success(), "readelf -d {}", binary.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| line.contains("(NEEDED)"))
        .filter_map(|line| line.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect()
}

#[test]
fn musicgen_bench_needs_libtorch_cuda_when_the_linked_libtorch_has_it() {
    let binary = Path::new(env!("CARGO_BIN_EXE_musicgen-bench"));
    let libtorch = Path::new(env!("SC_LIBTORCH_LIB"));
    let needed = needed_libraries(binary);
    assert!(
        needed.iter().any(|l| l == "libtorch_cpu.so"),
        "readelf found no libtorch in {needed:?}"
    );
    if libtorch.join("libtorch_cuda.so").exists() {
        assert!(
            needed.iter().any(|l| l == "libtorch_cuda.so"),
            "{} links {} (which has libtorch_cuda.so) but does not need it: {needed:?}",
            binary.display(),
            libtorch.display()
        );
    } else {
        eprintln!(
            "{} has no libtorch_cuda.so; nothing to check",
            libtorch.display()
        );
    }
}
