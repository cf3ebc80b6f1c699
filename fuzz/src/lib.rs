//! The audiocraft crate's untrusted-input parsers, compiled from their own
//! source files so the fuzz targets exercise exactly the shipped code
//! without building libtorch: the torch.save reader's pickle VM and zip
//! layer, the xp.cfg YAML config reader, the `config.json` mirror, and the
//! embedded mode's signed-link signatures. Nothing else belongs here.

pub mod torch_pickle;

#[path = "../../audiocraft/src/audiocraft_config.rs"]
pub mod audiocraft_config;

#[path = "../../audiocraft/src/config.rs"]
pub mod config;

#[path = "../../audiocraft/src/safetensors_header.rs"]
pub mod safetensors_header;

#[path = "../../infra/embedded/src/link_signature.rs"]
pub mod link_signature;
