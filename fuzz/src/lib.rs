//! The audiocraft crate's untrusted-input parsers, compiled from their own
//! source files so the fuzz targets exercise exactly the shipped code
//! without building libtorch: the torch.save reader's pickle VM and zip
//! layer, and the xp.cfg YAML config reader. Nothing else belongs here.

pub mod torch_pickle;

#[path = "../../audiocraft/src/audiocraft_config.rs"]
pub mod audiocraft_config;
