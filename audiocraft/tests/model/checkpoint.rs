//! Loading checkpoint directories: the happy paths (single file, shards,
//! dtype conversion, both weight-norm spellings) and every way a directory
//! can be broken, each of which must be a one-line error naming the culprit.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sound_creator_audiocraft::checkpoint::{resolve_model_dir, Checkpoint, LoadError};
use sound_creator_audiocraft::hub::HubSettings;
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// A model with three variables, as a model constructor would create them.
fn model_vars() -> nn::VarStore {
    let vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    // The returned handles are not needed: the store keeps the variables.
    let _ = root
        .sub("proj")
        .f_var("weight", &[2, 3], Init::Const(0.))
        .expect("create proj.weight");
    let _ = root
        .sub("proj")
        .f_var("bias", &[2], Init::Const(0.))
        .expect("create proj.bias");
    let _ = root
        .sub("conv")
        .f_var("weight_g", &[4, 1, 1], Init::Const(0.))
        .expect("create conv.weight_g");
    vs
}

fn proj_weight() -> Tensor {
    Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3])
}

/// The tensors `model_vars` needs, as a checkpoint would store them.
fn stored_tensors() -> Vec<(&'static str, Tensor)> {
    vec![
        ("proj.weight", proj_weight()),
        ("proj.bias", Tensor::from_slice(&[1.5f32, -2.0])),
        (
            "conv.weight_g",
            Tensor::ones([4, 1, 1], (Kind::Float, Device::Cpu)),
        ),
    ]
}

fn write_dir(tensors: &[(&str, Tensor)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "test", "width": 3}"#,
    )
    .expect("write config.json");
    std::fs::write(dir.path().join("tokenizer.json"), "{}").expect("write tokenizer.json");
    Tensor::write_safetensors(tensors, dir.path().join("model.safetensors"))
        .expect("write model.safetensors");
    dir
}

fn load(dir: &Path) -> Result<nn::VarStore, LoadError> {
    let mut vs = model_vars();
    Checkpoint::open(dir)?.load_into(&mut vs)?;
    Ok(vs)
}

fn var(vs: &nn::VarStore, name: &str) -> Tensor {
    vs.variables().remove(name).expect("variable exists")
}

fn assert_one_line(message: &str) {
    assert!(
        !message.contains('\n'),
        "error spans several lines: {message}"
    );
}

#[test]
fn a_well_formed_directory_loads_every_variable() {
    let dir = write_dir(&stored_tensors());
    let vs = load(dir.path()).unwrap();
    assert!(var(&vs, "proj.weight").equal(&proj_weight()));
    assert!(var(&vs, "proj.bias").equal(&Tensor::from_slice(&[1.5f32, -2.0])));
}

#[test]
fn config_and_tokenizer_are_exposed() {
    let dir = write_dir(&stored_tensors());
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    #[derive(serde::Deserialize)]
    struct Width {
        width: i64,
    }
    assert_eq!(checkpoint.config::<Width>().unwrap().width, 3);
    assert_eq!(
        checkpoint.tokenizer_file().unwrap(),
        dir.path().join("tokenizer.json")
    );
    assert_eq!(checkpoint.dir(), dir.path());
    assert!(checkpoint.contains("proj.bias"));
}

#[test]
fn a_config_of_the_wrong_shape_names_config_json() {
    let dir = write_dir(&stored_tensors());
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct NeedsDepth {
        depth: i64,
    }
    let message = checkpoint.config::<NeedsDepth>().unwrap_err().to_string();
    assert!(
        message.contains("config.json") && message.contains("depth"),
        "{message}"
    );
    assert_one_line(&message);
}

#[test]
fn half_and_bfloat16_weights_are_converted_to_the_variable_kind() {
    let mut tensors = stored_tensors();
    tensors[0].1 = proj_weight().to_kind(Kind::Half);
    tensors[1].1 = Tensor::from_slice(&[1.5f32, -2.0]).to_kind(Kind::BFloat16);
    let dir = write_dir(&tensors);
    let vs = load(dir.path()).unwrap();
    let weight = var(&vs, "proj.weight");
    assert_eq!(weight.kind(), Kind::Float);
    assert!(weight.equal(&proj_weight()));
    assert!(var(&vs, "proj.bias").equal(&Tensor::from_slice(&[1.5f32, -2.0])));
}

#[test]
fn extra_tensors_in_the_file_are_ignored() {
    let mut tensors = stored_tensors();
    tensors.push((
        "encoder.layers.0.conv.bias",
        Tensor::zeros([7], (Kind::Float, Device::Cpu)),
    ));
    let dir = write_dir(&tensors);
    load(dir.path()).unwrap();
}

#[test]
fn weight_norm_factors_load_from_the_parametrizations_spelling() {
    let mut tensors = stored_tensors();
    let g = Tensor::full([4, 1, 1], 3.0, (Kind::Float, Device::Cpu));
    tensors[2] = ("conv.parametrizations.weight.original0", g.copy());
    let dir = write_dir(&tensors);
    let vs = load(dir.path()).unwrap();
    assert!(var(&vs, "conv.weight_g").equal(&g));
}

#[test]
fn a_truncated_file_is_a_one_line_error_naming_the_file() {
    let dir = write_dir(&stored_tensors());
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 5]).unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert!(message.contains("truncated"), "{message}");
    assert_one_line(&message);
}

#[test]
fn a_file_cut_inside_its_header_is_a_one_line_error_naming_the_file() {
    let dir = write_dir(&stored_tensors());
    let file = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..20]).unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert_one_line(&message);
}

#[test]
fn a_file_that_is_not_safetensors_is_a_one_line_error_naming_the_file() {
    let dir = write_dir(&stored_tensors());
    let file = dir.path().join("model.safetensors");
    std::fs::write(&file, b"<html>rate limited</html>").unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(message.contains(&file.display().to_string()), "{message}");
    assert_one_line(&message);
}

#[test]
fn a_wrong_shape_names_file_tensor_and_both_shapes() {
    let mut tensors = stored_tensors();
    tensors[0].1 = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
    let dir = write_dir(&tensors);

    let message = load(dir.path()).unwrap_err().to_string();
    assert!(message.contains("model.safetensors"), "{message}");
    assert!(message.contains("proj.weight"), "{message}");
    assert!(
        message.contains("[3, 2]") && message.contains("[2, 3]"),
        "{message}"
    );
    assert_one_line(&message);
}

#[test]
fn a_missing_tensor_names_the_tensor_and_the_files_searched() {
    let mut tensors = stored_tensors();
    let _ = tensors.remove(1);
    let dir = write_dir(&tensors);

    let error = load(dir.path()).unwrap_err();
    assert!(
        matches!(error, LoadError::MissingTensor { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("proj.bias") && message.contains("model.safetensors"),
        "{message}"
    );
    assert_one_line(&message);
}

#[test]
fn a_missing_config_is_a_clear_error() {
    let dir = write_dir(&stored_tensors());
    std::fs::remove_file(dir.path().join("config.json")).unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("config.json") && message.contains("not found"),
        "{message}"
    );
    assert_one_line(&message);
}

#[test]
fn an_unparsable_config_names_the_file() {
    let dir = write_dir(&stored_tensors());
    std::fs::write(dir.path().join("config.json"), "{ not json").unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(message.contains("config.json"), "{message}");
    assert_one_line(&message);
}

#[test]
fn a_directory_without_weights_says_which_files_it_expected() {
    let dir = write_dir(&stored_tensors());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("model.safetensors.index.json"),
        "{message}"
    );
}

#[test]
fn a_missing_tokenizer_names_tokenizer_json() {
    let dir = write_dir(&stored_tensors());
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();

    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    let message = checkpoint.tokenizer_file().unwrap_err().to_string();
    assert!(message.contains("tokenizer.json"), "{message}");
}

fn write_sharded(dir: &Path) -> PathBuf {
    let tensors = stored_tensors();
    let (first, second) = tensors.split_at(1);
    let names = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    Tensor::write_safetensors(first, dir.join(names[0])).expect("write shard 1");
    Tensor::write_safetensors(second, dir.join(names[1])).expect("write shard 2");
    let index = serde_json::json!({
        "metadata": { "total_size": 0 },
        "weight_map": {
            "proj.weight": names[0],
            "proj.bias": names[1],
            "conv.weight_g": names[1],
        }
    });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())
        .expect("write shard index");
    dir.join(names[1])
}

#[test]
fn a_sharded_checkpoint_with_two_shards_loads() {
    let dir = write_dir(&stored_tensors());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    write_sharded(dir.path());

    let vs = load(dir.path()).unwrap();
    assert!(var(&vs, "proj.weight").equal(&proj_weight()));
    assert!(var(&vs, "proj.bias").equal(&Tensor::from_slice(&[1.5f32, -2.0])));
}

#[test]
fn a_missing_shard_is_an_error_naming_the_shard() {
    let dir = write_dir(&stored_tensors());
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let second = write_sharded(dir.path());
    std::fs::remove_file(&second).unwrap();

    let message = Checkpoint::open(dir.path()).unwrap_err().to_string();
    assert!(
        message.contains("model-00002-of-00002.safetensors"),
        "{message}"
    );
    assert_one_line(&message);
}

#[test]
fn an_existing_local_directory_is_used_as_is() {
    let dir = write_dir(&stored_tensors());
    let cache = tempfile::tempdir().unwrap();
    let model = dir.path().to_str().unwrap();
    assert_eq!(
        resolve_model_dir(model, cache.path(), &HubSettings::offline()).unwrap(),
        dir.path()
    );
}

#[test]
fn a_model_that_is_neither_a_directory_nor_a_hub_id_is_rejected() {
    let cache = tempfile::tempdir().unwrap();
    let message = resolve_model_dir("no-such-directory", cache.path(), &HubSettings::offline())
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("no-such-directory") && message.contains("local model directory"),
        "{message}"
    );
}

#[test]
fn a_hub_id_without_cache_or_network_fails_quickly_and_points_at_a_local_directory() {
    // Port 9 (discard) on loopback refuses the connection at once.
    let settings = HubSettings {
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        offline: false,
    };
    let cache = tempfile::tempdir().unwrap();
    let started = Instant::now();

    let error = resolve_model_dir("facebook/musicgen-small", cache.path(), &settings).unwrap_err();

    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, LoadError::Download { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("MUSIC_GEN_MODEL") && message.contains("local directory"),
        "{message}"
    );
    assert!(
        message.contains("127.0.0.1:9/facebook/musicgen-small/resolve/main/config.json"),
        "{message}"
    );
    assert_one_line(&message);
}

/// A minimal hub on loopback: serves `files` under
/// `/org/model/resolve/main/<file>`, 404 for anything else, and records
/// every requested path and Authorization header.
fn serve_hub(files: HashMap<String, Vec<u8>>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let endpoint = format!("http://{}", listener.local_addr().expect("local address"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&requests);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut request_line = String::new();
            reader
                .read_line(&mut request_line)
                .expect("read request line");
            let mut authorization = String::new();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).expect("read header") <= 2 {
                    break;
                }
                if header.to_ascii_lowercase().starts_with("authorization:") {
                    authorization = header.trim().to_ascii_lowercase();
                }
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            log.lock()
                .expect("request log lock")
                .push(format!("{path} {authorization}").trim().to_owned());
            match path
                .strip_prefix("/org/model/resolve/main/")
                .and_then(|f| files.get(f))
            {
                Some(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    stream
                        .write_all(head.as_bytes())
                        .expect("write response head");
                    stream.write_all(body).expect("write response body");
                }
                None => stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .expect("write 404"),
            }
        }
    });
    (endpoint, requests)
}

#[test]
fn a_sharded_hub_model_is_downloaded_once_then_served_from_the_cache() {
    let source = write_dir(&stored_tensors());
    std::fs::remove_file(source.path().join("model.safetensors")).unwrap();
    write_sharded(source.path());
    let files: HashMap<String, Vec<u8>> = std::fs::read_dir(source.path())
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_str().unwrap().to_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    let (endpoint, requests) = serve_hub(files);
    let settings = HubSettings {
        endpoint,
        token: Some("secret".to_owned()),
        offline: false,
    };
    let cache = tempfile::tempdir().unwrap();

    let dir = resolve_model_dir("org/model", cache.path(), &settings).unwrap();

    assert_eq!(dir, cache.path().join("org--model"));
    let vs = load(&dir).unwrap();
    assert!(var(&vs, "proj.bias").equal(&Tensor::from_slice(&[1.5f32, -2.0])));
    let log = requests.lock().unwrap().clone();
    assert!(
        log.iter()
            .all(|r| r.ends_with("authorization: bearer secret")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|r| r.contains("model-00002-of-00002.safetensors")),
        "{log:?}"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|name| name.to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let again = resolve_model_dir("org/model", cache.path(), &settings).unwrap();
    assert_eq!(again, dir);
    assert_eq!(
        requests.lock().unwrap().len(),
        log.len(),
        "second resolve must not download"
    );
}

#[test]
fn a_model_missing_on_the_hub_is_an_error_naming_the_url() {
    let (endpoint, _requests) = serve_hub(HashMap::new());
    let settings = HubSettings {
        endpoint: endpoint.clone(),
        token: None,
        offline: false,
    };
    let cache = tempfile::tempdir().unwrap();

    let message = resolve_model_dir("org/model", cache.path(), &settings)
        .unwrap_err()
        .to_string();

    assert!(
        message.contains(&format!("{endpoint}/org/model/resolve/main/config.json")),
        "{message}"
    );
    assert_one_line(&message);
}

#[test]
fn offline_mode_never_contacts_the_hub() {
    let settings = HubSettings {
        endpoint: "http://127.0.0.1:9".to_owned(),
        token: None,
        offline: true,
    };
    let cache = tempfile::tempdir().unwrap();
    let message = resolve_model_dir("org/model", cache.path(), &settings)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("HF_HUB_OFFLINE") && message.contains("MUSIC_GEN_MODEL"),
        "{message}"
    );
}

#[test]
fn the_hub_token_is_not_shown_in_debug_output() {
    let settings = HubSettings {
        endpoint: "x".to_owned(),
        token: Some("secret".to_owned()),
        offline: false,
    };
    assert!(!format!("{settings:?}").contains("secret"));
}
