//! The torch.save reader on the tiny AudioGen fixture that audiocraft itself
//! exported (`tests/fixtures/make_audiogen_fixture.py`): both files, their
//! `xp.cfg`, every tensor's dtype and shape, values against safetensors
//! copies the script wrote, and each way a file can be broken, which must be
//! a one-line error naming the file and the key.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sound_creator_audiocraft::audiocraft_config::{CompressionConfig, LmConfig};
use sound_creator_audiocraft::checkpoint::LoadError;
use sound_creator_audiocraft::torch_pickle::{TorchFile, TorchFileError, Value};
use tch::Tensor;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-audiogen")
        .join(name)
}

fn one_line(err: &impl std::fmt::Display) -> String {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    msg
}

fn safetensors(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .expect("read safetensors")
        .into_iter()
        .collect()
}

fn assert_same(name: &str, got: &Tensor, want: &Tensor) {
    assert_eq!(got.kind(), want.kind(), "{name}: dtype");
    assert_eq!(got.size(), want.size(), "{name}: shape");
    assert!(got.equal(want), "{name}: values differ");
}

#[derive(serde::Deserialize)]
struct Expected {
    dtype: String,
    shape: Vec<u64>,
}

#[test]
fn both_audiogen_files_list_every_tensor_with_its_dtype_and_shape() {
    let text = std::fs::read_to_string(fixture("reader/expected_keys.json")).unwrap();
    let expected: BTreeMap<String, BTreeMap<String, Expected>> =
        serde_json::from_str(&text).unwrap();
    for (file, want) in &expected {
        let torch = TorchFile::open(&fixture(file)).unwrap();
        let state = torch.best_state().unwrap();
        let got: BTreeMap<&str, _> = state.infos().collect();
        assert_eq!(
            got.keys().copied().collect::<Vec<_>>(),
            want.keys().map(String::as_str).collect::<Vec<_>>(),
            "{file}: tensor names"
        );
        for (name, info) in &got {
            let w = &want[*name];
            assert_eq!(format!("torch.{}", info.dtype()), w.dtype, "{file} {name}");
            assert_eq!(info.shape, w.shape, "{file} {name}");
        }
        assert_eq!(torch.get_str("version").unwrap(), "1.3.0");
        assert_eq!(torch.get("exported").unwrap(), &Value::Bool(true));
    }
    // The LM is stored in float16 like the published file, the codec in float32.
    let lm = TorchFile::open(&fixture("state_dict.bin")).unwrap();
    let lm_state = lm.best_state().unwrap();
    let emb = lm_state.tensor("emb.0.weight").unwrap();
    assert_eq!(emb.kind(), tch::Kind::Half);
    assert_eq!(emb.size(), [65, 64]);
    assert!(lm_state.contains("transformer.layers.1.cross_attention.in_proj_weight"));
    assert!(lm_state.contains("condition_provider.conditioners.description.output_proj.weight"));
}

#[test]
fn xp_cfg_gives_the_lm_and_codec_hyperparameters() {
    let lm = TorchFile::open(&fixture("state_dict.bin")).unwrap();
    let cfg = LmConfig::from_yaml(lm.get_str("xp.cfg").unwrap()).unwrap();
    let t = &cfg.transformer_lm;
    assert_eq!(
        (t.dim, t.num_heads, t.num_layers, t.ffn_dim()),
        (64, 4, 2, 256)
    );
    assert_eq!((t.n_q, t.card), (4, 64));
    assert!(t.norm_first && !t.bias_ff && !t.bias_attn && !t.bias_proj);
    assert_eq!(t.activation, "gelu");
    assert_eq!(t.positional_embedding, "sin");
    assert!(t.memory_efficient);
    assert!(cfg.cross_attention());
    assert_eq!(cfg.delays().unwrap(), [0, 1, 2, 3]);
    let (name, t5) = cfg.t5_conditioner().unwrap();
    assert_eq!(
        (name, t5.name.as_str(), t5.finetune),
        ("description", "t5-large", false)
    );
    assert_eq!(cfg.classifier_free_guidance.inference_coef, 3.0);
    assert_eq!(cfg.dataset.segment_duration, 10.0);
    assert_eq!((cfg.sample_rate, cfg.channels), (16000, 1));

    let codec = TorchFile::open(&fixture("compression_state_dict.bin")).unwrap();
    let cfg = CompressionConfig::from_yaml(codec.get_str("xp.cfg").unwrap()).unwrap();
    let s = &cfg.seanet;
    assert_eq!(s.ratios, [8, 5, 4, 2]);
    assert_eq!(
        (s.n_filters, s.dimension, s.lstm, s.compress),
        (4, 16, 2, 2)
    );
    assert_eq!(s.norm, "weight_norm");
    // audiocraft's default padding, unlike transformers' 32 kHz config.
    assert_eq!(s.pad_mode, "constant");
    // `causal: ${encodec.causal}` and `sample_rate: ${sample_rate}` resolved.
    assert!(!s.causal && !cfg.encodec.causal);
    assert_eq!(cfg.sample_rate(), 16000);
    assert_eq!((s.hop_length(), cfg.frame_rate()), (320, 50));
    assert_eq!((cfg.rvq.n_q, cfg.rvq.bins), (4, 64));
}

#[test]
fn tensor_values_equal_the_safetensors_copies() {
    let lm = TorchFile::open(&fixture("state_dict.bin")).unwrap();
    let codec = TorchFile::open(&fixture("compression_state_dict.bin")).unwrap();
    let lm_state = lm.best_state().unwrap();
    let codec_state = codec.best_state().unwrap();
    let copies = safetensors(&fixture("reader/tensors.safetensors"));
    assert_eq!(copies.len(), 10);
    for (key, want) in &copies {
        let (state, name) = match key.split_once('/') {
            Some(("lm", name)) => (&lm_state, name),
            Some(("codec", name)) => (&codec_state, name),
            _ => panic!("unexpected key {key}"),
        };
        assert_same(key, &state.tensor(name).unwrap(), want);
    }
}

#[test]
fn every_dtype_view_offset_and_python_scalar_reads_back() {
    let file = TorchFile::open(&fixture("reader/varieties.bin")).unwrap();
    // best_state nests the state dict under `model`, as training checkpoints do.
    let state = file.best_state().unwrap();
    let copies = safetensors(&fixture("reader/varieties.safetensors"));
    let all = state.read_all().unwrap();
    assert_eq!(all.len(), copies.len());
    for (name, got) in &all {
        assert_same(name, got, &copies[name]);
    }
    let sliced = state.info("sliced").unwrap();
    assert_eq!(
        (sliced.storage_offset, sliced.stride.as_slice()),
        (5, &[4u64, 1][..])
    );
    assert_eq!(state.info("expanded").unwrap().stride, [0, 1]);
    assert_eq!(
        state.info("whole").unwrap().storage.key,
        sliced.storage.key,
        "views share their storage"
    );

    assert_eq!(file.get_str("xp.cfg").unwrap(), "a: 1\nb:\n  c: [1, 2]\n");
    let Value::List(scalars) = file.get("scalars").unwrap() else {
        panic!("scalars is not a list")
    };
    let ints: Vec<i64> = scalars[..9]
        .iter()
        .map(|v| match v {
            Value::Int(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        ints,
        [1, -1, 255, 256, 65535, 65536, -(1 << 31), 1 << 31, i64::MIN]
    );
    // 2**64 does not fit an i64: LONG1 bytes, little-endian.
    assert_eq!(scalars[9], Value::BigInt(vec![0, 0, 0, 0, 0, 0, 0, 0, 1]));
    assert_eq!(scalars[10], Value::Float(1.5));
    assert!(matches!(scalars[11], Value::Float(f) if f == 0.0 && f.is_sign_negative()));
    assert_eq!(
        scalars[12..],
        [Value::None, Value::Bool(false), Value::Str("é€".into())]
    );
    assert_eq!(
        file.get("tuple").unwrap(),
        &Value::Tuple(vec![
            Value::Int(1),
            Value::Str("two".into()),
            Value::Tuple(vec![Value::Float(3.0)])
        ])
    );
}

/// Copies a torch.save zip entry by entry, letting `edit` change or drop
/// entries, so each test breaks exactly one thing.
fn rewrite(src: &Path, dst: &Path, edit: impl Fn(&str, Vec<u8>) -> Option<Vec<u8>>) {
    let mut zin =
        zip::ZipArchive::new(std::fs::File::open(src).expect("open source")).expect("read zip");
    let mut zout = zip::ZipWriter::new(std::fs::File::create(dst).expect("create copy"));
    let options =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut entry = zin.by_index(i).expect("entry");
        let name = entry.name().to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        if let Some(bytes) = edit(&name, bytes) {
            zout.start_file(name, options).expect("start entry");
            zout.write_all(&bytes).expect("write entry");
        }
    }
    zout.finish().expect("finish zip");
}

fn open_err(path: &Path) -> TorchFileError {
    match TorchFile::open(path) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn a_missing_file_is_a_one_line_error_naming_it() {
    let path = fixture("no-such-dir/state_dict.bin");
    let err = open_err(&path);
    let msg = one_line(&err);
    assert!(matches!(err, TorchFileError::NotFound { .. }), "{msg}");
    assert!(
        msg.contains("no-such-dir/state_dict.bin") && msg.ends_with("not found"),
        "{msg}"
    );
    let as_load: LoadError = err.into();
    assert!(matches!(as_load, LoadError::NotFound { .. }));
}

#[test]
fn a_truncated_zip_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("state_dict.bin")).unwrap();
    for keep in [0, 10, bytes.len() / 2, bytes.len() - 10] {
        let path = dir.path().join("state_dict.bin");
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let msg = one_line(&open_err(&path));
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
        assert!(msg.contains("zip") || msg.contains("ends early"), "{msg}");
    }
}

#[test]
fn a_truncated_or_corrupt_pickle_is_a_one_line_error_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state_dict.bin");
    rewrite(&fixture("state_dict.bin"), &path, |name, bytes| {
        Some(if name.ends_with("data.pkl") {
            bytes[..bytes.len() / 3].to_vec()
        } else {
            bytes
        })
    });
    let msg = one_line(&open_err(&path));
    assert!(msg.contains("pickle state_dict/data.pkl at byte"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    rewrite(&fixture("state_dict.bin"), &path, |name, mut bytes| {
        if name.ends_with("data.pkl") {
            bytes[2] = 0xfe; // the first opcode after PROTO 2
        }
        Some(bytes)
    });
    let msg = one_line(&open_err(&path));
    assert!(msg.contains("at byte 2: unsupported opcode 0xfe"), "{msg}");

    rewrite(&fixture("state_dict.bin"), &path, |name, bytes| {
        (!name.ends_with("data.pkl")).then_some(bytes)
    });
    let msg = one_line(&open_err(&path));
    assert!(msg.contains("no <archive>/data.pkl"), "{msg}");
}

#[test]
fn a_truncated_or_missing_storage_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state_dict.bin");
    rewrite(&fixture("state_dict.bin"), &path, |name, bytes| {
        Some(if name == "state_dict/data/3" {
            bytes[..bytes.len() - 2].to_vec()
        } else {
            bytes
        })
    });
    let file = TorchFile::open(&path).unwrap();
    let err = file.best_state().unwrap_err();
    let msg = one_line(&err);
    assert!(
        msg.contains("tensor `") && msg.contains("storage 3"),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");

    rewrite(&fixture("state_dict.bin"), &path, |name, bytes| {
        (name != "state_dict/data/0").then_some(bytes)
    });
    let file = TorchFile::open(&path).unwrap();
    let msg = one_line(&file.best_state().unwrap_err());
    assert!(msg.contains("no entry state_dict/data/0"), "{msg}");
}

#[test]
fn a_wrong_key_is_a_one_line_error_listing_what_is_there() {
    let file = TorchFile::open(&fixture("state_dict.bin")).unwrap();
    let err = file.get("best_states").unwrap_err();
    let msg = one_line(&err);
    assert!(msg.contains("key `best_states` not found"), "{msg}");
    assert!(
        msg.contains("best_state, xp.cfg, version, exported"),
        "{msg}"
    );

    let state = file.best_state().unwrap();
    let msg = one_line(
        &state
            .tensor("transformer.layers.7.norm1.weight")
            .unwrap_err(),
    );
    assert!(msg.contains("state_dict.bin"), "{msg}");
    assert!(
        msg.contains("`best_state.transformer.layers.7.norm1.weight` not found"),
        "{msg}"
    );

    let msg = one_line(&file.get_str("exported").unwrap_err());
    assert!(
        msg.contains("`exported` is a bool, expected a str"),
        "{msg}"
    );
}

#[test]
fn a_wrong_shape_is_a_one_line_error_naming_the_tensor() {
    let file = TorchFile::open(&fixture("state_dict.bin")).unwrap();
    let state = file.best_state().unwrap();
    let table: [(&str, &[i64]); 3] = [
        ("emb.0.weight", &[65, 64]),
        ("transformer.layers.0.self_attn.in_proj_weight", &[192, 64]),
        ("linears.0.weight", &[2048, 64]),
    ];
    let err = state.check_shapes(table).unwrap_err();
    let msg = one_line(&err);
    assert!(
        msg.contains(
            "tensor `linears.0.weight` has shape [64, 64] but the model expects [2048, 64]"
        ),
        "{msg}"
    );
    let as_load: LoadError = err.into();
    assert!(matches!(as_load, LoadError::Shape { .. }));

    let msg = one_line(
        &state
            .tensor_with_shape("emb.1.weight", &[2049, 64])
            .unwrap_err(),
    );
    assert!(msg.contains("emb.1.weight"), "{msg}");
    assert!(state.tensor_with_shape("emb.1.weight", &[65, 64]).is_ok());
}

#[test]
fn a_non_torch_file_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    std::fs::copy(fixture("t5/model.safetensors"), &path).unwrap();
    let msg = one_line(&open_err(&path));
    assert!(msg.contains("not a torch.save zip archive"), "{msg}");
    let as_load: LoadError = open_err(&path).into();
    let msg = one_line(&as_load);
    assert!(msg.starts_with(&path.display().to_string()), "{msg}");
}
