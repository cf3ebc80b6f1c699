//! Parity of the EnCodec decoder with `transformers`' `EncodecModel.decode`
//! on the tiny checkpoint in `tests/fixtures/tiny-musicgen` (EnCodec 32 kHz
//! layout, weights stored as `weight_g`/`weight_v` like the published
//! checkpoint), whose `encodec_codes` / `encodec_audio` references were
//! recorded by `tests/fixtures/make_musicgen_fixture.py`.

use std::path::PathBuf;

use sound_creator_audiocraft::checkpoint::Checkpoint;
use sound_creator_audiocraft::config::MusicgenConfig;
use sound_creator_audiocraft::encodec::EncodecDecoder;
use tch::{nn, Device, Kind, Tensor};

use super::fixtures::{fixture, Reference};

fn fixture_dir() -> PathBuf {
    fixture("tiny-musicgen")
}

fn reference() -> Reference {
    Reference::of(&fixture_dir())
}

/// The fixture's EnCodec, loaded through the same checkpoint path the engine uses.
fn fixture_decoder() -> (nn::VarStore, EncodecDecoder) {
    let checkpoint = Checkpoint::open(&fixture_dir()).expect("open fixture checkpoint");
    let cfg: MusicgenConfig = checkpoint.config().expect("fixture config.json");
    let mut vs = nn::VarStore::new(Device::Cpu);
    let decoder = EncodecDecoder::new(vs.root() / "audio_encoder", &cfg.audio_encoder)
        .expect("build EnCodec decoder");
    checkpoint.load_into(&mut vs).expect("load fixture weights");
    (vs, decoder)
}

#[test]
fn fixture_codes_decode_to_the_transformers_audio_within_1e_4() {
    let reference = reference();
    let (_vs, decoder) = fixture_decoder();

    let audio = decoder.decode(&reference["encodec_codes"]).unwrap();

    let expected = &reference["encodec_audio"];
    assert_eq!(audio.size(), expected.size());
    assert_eq!(audio.kind(), Kind::Float);
    let diff = (&audio - expected).abs().max().double_value(&[]);
    eprintln!("EnCodec audio max abs diff vs transformers: {diff:e}");
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

/// The fixture's codebooks are all zero (EnCodec's initialisation), so the
/// reference above cannot tell whether each code is looked up in its own
/// codebook and the embeddings summed. Give every codebook the same random
/// table: then the audio must depend only on the multiset of codes in each
/// frame, and not be the same as for other codes.
#[test]
fn each_codebook_contributes_its_embedding_to_a_sum() {
    let (vs, decoder) = fixture_decoder();
    let table = {
        let _no_grad = tch::no_grad_guard();
        let mut codebooks: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(name, _)| name.ends_with("codebook.embed"))
            .collect();
        assert_eq!(codebooks.len(), decoder.num_codebooks());
        let table = Tensor::randn(codebooks[0].1.size(), (Kind::Float, Device::Cpu));
        for (_, codebook) in &mut codebooks {
            codebook.copy_(&table);
        }
        table
    };
    assert!(table.abs().sum(Kind::Float).double_value(&[]) > 0.0);

    let codes = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 7, 8]).view([1, 4, 2]);
    let reversed = codes.flip([1]);
    let other = Tensor::from_slice(&[1i64, 1, 1, 1, 5, 5, 5, 5]).view([1, 4, 2]);

    let audio = decoder.decode(&codes).unwrap();
    let max_diff = |other: &Tensor| (&audio - other).abs().max().double_value(&[]);
    assert!(max_diff(&decoder.decode(&reversed).unwrap()) <= 1e-5);
    assert!(max_diff(&decoder.decode(&other).unwrap()) > 1e-3);
}

#[test]
fn codes_outside_the_codebook_are_an_error_not_a_panic() {
    let (_vs, decoder) = fixture_decoder();
    let codes = Tensor::full([1, 4, 3], 64, (Kind::Int64, Device::Cpu));
    let message = decoder.decode(&codes).unwrap_err().to_string();
    assert!(message.contains("0..64"), "{message}");
    let floats = Tensor::zeros([1, 4, 3], (Kind::Float, Device::Cpu));
    assert!(decoder.decode(&floats).is_err());
    let too_many_codebooks = Tensor::zeros([1, 5, 3], (Kind::Int64, Device::Cpu));
    assert!(decoder.decode(&too_many_codebooks).is_err());
}
