//! Streams one musicgen-small decoding step's worth of f32 linear weights
//! through `gemv::linear` and reports the effective read bandwidth, next to
//! a libtorch copy of the same bytes. `cargo run --release --example
//! gemv_bandwidth [rows]`.

use std::time::Instant;

use sound_creator_audiocraft::gemv;
use tch::{Device, Kind, Tensor};

fn main() -> anyhow::Result<()> {
    let rows: i64 = std::env::args()
        .nth(1)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(2);
    tch::set_num_threads(1);
    let shapes = [[1024i64, 1024]; 6]
        .into_iter()
        .chain([[4096, 1024], [1024, 4096]]);
    let layer: Vec<[i64; 2]> = shapes.collect();
    let weights: Vec<Tensor> = (0..24)
        .flat_map(|_| {
            layer
                .iter()
                .map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu)))
        })
        .collect();
    let bytes: i64 = weights.iter().map(|w| w.numel() as i64 * 4).sum();
    let inputs = [1024i64, 4096].map(|n| Tensor::randn([rows, n], (Kind::Float, Device::Cpu)));
    let mut best = f64::INFINITY;
    for _ in 0..10 {
        let started = Instant::now();
        for w in &weights {
            let x = if w.size()[1] == 1024 {
                &inputs[0]
            } else {
                &inputs[1]
            };
            let _ = gemv::linear(x, w)?;
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    let flat = Tensor::randn([bytes / 4], (Kind::Float, Device::Cpu));
    let mut dst = flat.empty_like();
    let mut copy = f64::INFINITY;
    for _ in 0..5 {
        let started = Instant::now();
        dst.copy_(&flat);
        copy = copy.min(started.elapsed().as_secs_f64());
    }
    println!(
        "{rows} rows, {} threads: {:.1} ms for {:.2} GB = {:.1} GB/s read; libtorch copy {:.1} GB/s (read+write)",
        rayon::current_num_threads(),
        best * 1e3,
        bytes as f64 / 1e9,
        bytes as f64 / best / 1e9,
        2.0 * bytes as f64 / copy / 1e9
    );
    Ok(())
}
