//! Links CUDA for real, and builds the CUDA shim, when the libtorch that
//! torch-sys links has CUDA.
//!
//! libtorch splits its backend in two: `libtorch_cpu.so` and
//! `libtorch_cuda.so`. Nothing a model calls references a symbol of the
//! latter (it registers its kernels from static initialisers), so the
//! linker's `--as-needed` drops it and `tch::Cuda::is_available()` is false
//! on a GPU machine. The binaries that run models must therefore be linked
//! with `-Wl,--no-as-needed,-ltorch_cuda,--as-needed` (what tch's own
//! build script does, as its docs suggest). Cargo applies link arguments
//! only to the package that prints them, so this script passes the argument
//! to its own binaries and exports it (`DEP_SOUND_CREATOR_AUDIOCRAFT_*`, via
//! `links`) for the build scripts of packages whose binaries run models.
//!
//! The shim (`csrc/cuda_shim.cpp`: CUDA graphs, stream marks, the device's
//! name) is compiled against the libtorch headers and the CUDA runtime
//! headers; without the latter the crate builds without it and decodes
//! eagerly, with a warning. This script must never fail a CPU-only build.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Wraps libtorch_cuda in `--no-as-needed`, as one linker argument.
const CUDA_LINK_ARG: &str = "-Wl,--no-as-needed,-ltorch_cuda,--as-needed";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(sc_cuda_shim)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=csrc/cuda_shim.cpp");
    for var in [
        "SOUND_CREATOR_CUDA_INCLUDE",
        "CUDA_HOME",
        "CUDA_PATH",
        "LIBTORCH_CXX11_ABI",
        "LIBTORCH_USE_PYTORCH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    // torch-sys (`links = "tch"`) tells its direct dependents where the
    // libtorch it linked lives.
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        println!("cargo:cuda=0");
        println!("cargo:cuda_link_arg=");
        return;
    };
    println!("cargo:rustc-env=SC_LIBTORCH_LIB={}", lib.display());
    println!("cargo:libtorch_lib={}", lib.display());
    let cuda = lib.join("libtorch_cuda.so").exists();
    println!("cargo:cuda={}", u8::from(cuda));
    if !cuda {
        println!("cargo:cuda_link_arg=");
        return;
    }
    println!("cargo:cuda_link_arg={CUDA_LINK_ARG}");
    println!("cargo:rustc-link-arg-bins={CUDA_LINK_ARG}");

    let Some(include) = lib.parent().map(|root| root.join("include")) else {
        return;
    };
    match cuda_include_dirs(&lib) {
        Some(cuda_dirs) => {
            cc::Build::new()
                .cpp(true)
                .pic(true)
                .std("c++17")
                .warnings(false)
                .include(&include)
                .includes(&cuda_dirs)
                .define("_GLIBCXX_USE_CXX11_ABI", cxx11_abi().as_str())
                .file("csrc/cuda_shim.cpp")
                .compile("sound_creator_cuda_shim");
            // The shim calls into c10_cuda, which torch-sys does not name.
            println!("cargo:rustc-link-lib=c10_cuda");
            println!("cargo:rustc-cfg=sc_cuda_shim");
        }
        None => println!(
            "cargo:warning=libtorch has CUDA but no CUDA runtime headers were found \
             (cuda_runtime_api.h and crt/host_defines.h): building without CUDA graphs. \
             `pip install nvidia-cuda-crt` next to torch, or set SOUND_CREATOR_CUDA_INCLUDE."
        ),
    }
}

/// Directories that together hold `cuda_runtime_api.h` and
/// `crt/host_defines.h`: a CUDA toolkit, or the pip packages next to torch
/// (`nvidia/cu13/include` from nvidia-cuda-runtime and nvidia-cuda-crt).
fn cuda_include_dirs(torch_lib: &Path) -> Option<Vec<PathBuf>> {
    let mut candidates: Vec<PathBuf> = env::var_os("SOUND_CREATOR_CUDA_INCLUDE")
        .map(|v| env::split_paths(&v).collect())
        .unwrap_or_default();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(root) = env::var_os(var) {
            candidates.push(PathBuf::from(root).join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    // torch/lib -> site-packages
    if let Some(site) = torch_lib.parent().and_then(Path::parent) {
        for package in ["cu13", "cuda_runtime", "cuda_nvcc", "cuda_crt"] {
            candidates.push(site.join("nvidia").join(package).join("include"));
        }
    }
    let runtime = candidates
        .iter()
        .find(|dir| dir.join("cuda_runtime_api.h").is_file())?;
    let crt = candidates
        .iter()
        .find(|dir| dir.join("crt/host_defines.h").is_file())?;
    let mut dirs = vec![runtime.clone()];
    if crt != runtime {
        dirs.push(crt.clone());
    }
    Some(dirs)
}

/// The C++ ABI libtorch was built with, as torch-sys decides it.
fn cxx11_abi() -> String {
    if let Ok(abi) = env::var("LIBTORCH_CXX11_ABI") {
        return abi;
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".to_owned());
        let asked = Command::new(python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output();
        if let Ok(out) = asked {
            let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && (text == "0" || text == "1") {
                return text;
            }
        }
    }
    "1".to_owned()
}
