//! Links `libtorch_cuda.so` into the `sound-creator` binary for real when
//! the linked libtorch has it: the argument comes from the model crate's
//! build script (`audiocraft/build.rs` says why it is needed), since Cargo
//! applies link arguments only to the package that prints them.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_SOUND_CREATOR_AUDIOCRAFT_CUDA_LINK_ARG");
    if let Ok(lib) = std::env::var("DEP_SOUND_CREATOR_AUDIOCRAFT_LIBTORCH_LIB") {
        // For the link test in tests/cuda_link.rs.
        println!("cargo:rustc-env=SC_LIBTORCH_LIB={lib}");
    }
    match std::env::var("DEP_SOUND_CREATOR_AUDIOCRAFT_CUDA_LINK_ARG") {
        Ok(arg) if !arg.is_empty() => println!("cargo:rustc-link-arg-bins={arg}"),
        _ => {}
    }
}
