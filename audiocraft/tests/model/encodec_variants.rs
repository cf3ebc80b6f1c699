//! Parity of the EnCodec decoder with `transformers`' `EncodecModel.decode`
//! in configurations MusicGen's own EnCodec does not use but the config
//! allows: causal convolutions with `time_group_norm`, conv shortcuts and
//! trim_right_ratio 0.5; reflect padding on an input shorter than the
//! padding with dilation growth 3 and 3 LSTM layers; and weight norm saved as
//! `parametrizations.weight.original0/1`. The checkpoints and reference audio
//! in `tests/fixtures/encodec-variants/` come from
//! `tests/fixtures/make_encodec_variants.py`.

use std::collections::HashMap;
use std::path::PathBuf;

use sound_creator_audiocraft::checkpoint::Checkpoint;
use sound_creator_audiocraft::config::EncodecConfig;
use sound_creator_audiocraft::encodec::EncodecDecoder;
use tch::{nn, Device, Tensor};

fn variant_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/encodec-variants")
        .join(name)
}

/// Max abs difference between our decoding of the variant's codes and the
/// audio `transformers` produced from them.
fn decode_diff(name: &str) -> f64 {
    let dir = variant_dir(name);
    let checkpoint = Checkpoint::open(&dir).expect("open variant checkpoint");
    let cfg: EncodecConfig = checkpoint.config().expect("variant config.json");
    let mut vs = nn::VarStore::new(Device::Cpu);
    let decoder = EncodecDecoder::new(vs.root(), &cfg).expect("build EnCodec decoder");
    checkpoint.load_into(&mut vs).expect("load variant weights");

    let reference: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("reference.safetensors"))
            .expect("reference.safetensors")
            .into_iter()
            .collect();
    let audio = decoder.decode(&reference["codes"]).expect("decode");
    let expected = &reference["audio"];
    assert_eq!(audio.size(), expected.size(), "{name}: audio shape");
    assert!(
        expected.abs().max().double_value(&[]) > 1e-3,
        "{name}: reference audio is silent"
    );
    let diff = (&audio - expected).abs().max().double_value(&[]);
    eprintln!("{name}: max abs diff vs transformers {diff:e}");
    diff
}

#[test]
fn causal_convs_with_time_group_norm_conv_shortcut_and_half_right_trim_match_transformers() {
    let diff = decode_diff("causal-groupnorm");
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn reflect_padding_on_a_two_frame_input_with_dilation_growth_3_and_3_lstm_layers_matches_transformers(
) {
    let diff = decode_diff("reflect-short");
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn weight_norm_saved_as_parametrizations_loads_and_matches_transformers() {
    let dir = variant_dir("parametrizations");
    let checkpoint = Checkpoint::open(&dir).expect("open variant checkpoint");
    assert!(checkpoint
        .tensor_names()
        .any(|n| n.ends_with("parametrizations.weight.original0")));
    assert!(!checkpoint.tensor_names().any(|n| n.ends_with("weight_g")));
    let diff = decode_diff("parametrizations");
    assert!(diff <= 1e-4, "max abs diff {diff}");
}
