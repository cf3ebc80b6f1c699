//! Parity of the EnCodec decoder with `transformers`' `EncodecModel.decode`.

use std::path::Path;

use sound_creator_musicgen::checkpoint::Checkpoint;
use sound_creator_musicgen::config::EncodecConfig;
use sound_creator_musicgen::encodec::EncodecDecoder;
use tch::{nn, Device, Kind, Tensor};

/// Decodes `codes` with the EnCodec stored under `prefix` in `dir` and
/// returns the largest absolute difference to `audio`.
fn max_abs_diff(dir: &Path, prefix: Option<&str>, codes: &Tensor, audio: &Tensor) -> f64 {
    let checkpoint = Checkpoint::open(dir).unwrap();
    let cfg: EncodecConfig = match prefix {
        Some(section) => {
            let value: serde_json::Value = checkpoint.config().unwrap();
            serde_json::from_value(value[section].clone()).unwrap()
        }
        None => checkpoint.config().unwrap(),
    };
    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = match prefix {
        Some(section) => vs.root() / section,
        None => vs.root(),
    };
    let decoder = EncodecDecoder::new(root, &cfg).unwrap();
    checkpoint.load_into(&mut vs).unwrap();
    let decoded = decoder.decode(codes).unwrap();
    assert_eq!(decoded.size(), audio.size());
    assert_eq!(decoded.kind(), Kind::Float);
    (decoded - audio).abs().max().double_value(&[])
}

#[test]
fn dev_variants() {
    let Ok(root) = std::env::var("ENCODEC_REF_DIR") else { return };
    for entry in std::fs::read_dir(root).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let reference: std::collections::HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.join("reference.safetensors")).unwrap().into_iter().collect();
        let diff = max_abs_diff(&dir, None, &reference["codes"], &reference["audio"]);
        let scale = reference["audio"].abs().max().double_value(&[]);
        eprintln!("{}: max abs diff {diff:e} (audio max {scale:e})", dir.display());
        assert!(diff <= 1e-4);
    }
}
