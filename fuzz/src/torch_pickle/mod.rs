//! `audiocraft/src/torch_pickle/{pickle,archive}.rs`, which depend on
//! nothing of tch (the tch layer is that directory's mod.rs, left out).

#[path = "../../../audiocraft/src/torch_pickle/pickle.rs"]
pub mod pickle;

#[path = "../../../audiocraft/src/torch_pickle/archive.rs"]
pub mod archive;
