//! Link arguments of the `sound-creator` binary, since Cargo applies link
//! arguments only to the package that prints them:
//! - `libtorch_cuda.so` linked for real when the linked libtorch has it: the
//!   argument comes from the model crate's build script (`audiocraft/build.rs`
//!   says why it is needed);
//! - a RUNPATH to the directory of the libtorch it was built against (the
//!   venv's `torch/lib`), so that the binary starts from a fresh shell
//!   without `LD_LIBRARY_PATH`. `LD_LIBRARY_PATH` still comes first, so a
//!   container that puts libtorch elsewhere is not affected.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_SOUND_CREATOR_AUDIOCRAFT_CUDA_LINK_ARG");
    if let Ok(lib) = std::env::var("DEP_SOUND_CREATOR_AUDIOCRAFT_LIBTORCH_LIB") {
        // For the link tests in tests/cuda_link.rs and tests/command_line.rs.
        println!("cargo:rustc-env=SC_LIBTORCH_LIB={lib}");
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{lib}");
    }
    match std::env::var("DEP_SOUND_CREATOR_AUDIOCRAFT_CUDA_LINK_ARG") {
        Ok(arg) if !arg.is_empty() => println!("cargo:rustc-link-arg-bins={arg}"),
        _ => {}
    }
}
