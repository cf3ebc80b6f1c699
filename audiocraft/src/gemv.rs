//! A single-pass f32 product `xs · weightᵀ` for a handful of rows on the CPU:
//! the shape of every decoder linear layer during autoregressive decoding.
//!
//! Such a step is memory-bound: each weight is used once per row, so the
//! time is the time to stream the weights from memory. libtorch has no f32
//! path that reads them once for 2 rows on the AMD CPU the service is
//! benchmarked on: MKL's small-M SGEMM is ~12x slower than a GEMV there, and
//! one GEMV per row reads the weights once per row. This kernel walks the
//! weight matrix once, computing the dot products of each weight row with
//! all input rows while it is in registers, and splits the output features
//! between rayon threads. It must never be used for anything but f32,
//! contiguous, CPU tensors; [`linear`] checks this and the caller falls back
//! to libtorch otherwise.
//!
//! The workspace denies `unsafe`; this module is the exception, because
//! reading a tensor's memory without copying it and calling CPU-specific
//! vector instructions cannot be done otherwise. Every block says why it is
//! sound, and the tests compare against libtorch.
#![allow(unsafe_code)]

use tch::{Device, Kind, TchError, Tensor};

/// The most input rows one call takes (the accumulators of two weight rows
/// times this many input rows must fit the 32 AVX-512 registers).
pub const MAX_ROWS: usize = 8;

/// `xs` [rows, in] · `weight` [out, in]ᵀ -> [rows, out], f32 on the CPU,
/// reading `weight` once. `rows` must be 1..=[`MAX_ROWS`].
pub fn linear(xs: &Tensor, weight: &Tensor) -> Result<Tensor, TchError> {
    let (rows, in_dim) = xs.size2()?;
    let (out_dim, w_in) = weight.size2()?;
    let usable =
        |t: &Tensor| t.kind() == Kind::Float && t.device() == Device::Cpu && t.is_contiguous();
    if w_in != in_dim || !(1..=MAX_ROWS as i64).contains(&rows) || !usable(xs) || !usable(weight) {
        return Err(TchError::Shape(format!(
            "gemv::linear takes 1..={MAX_ROWS} contiguous f32 CPU rows of width {w_in}, got {:?} {:?} {:?}",
            xs.size(),
            xs.kind(),
            xs.device()
        )));
    }
    let (rows, in_dim, out_dim) = (rows as usize, in_dim as usize, out_dim as usize);
    if out_dim == 0 || in_dim == 0 {
        return Tensor::f_zeros([rows as i64, out_dim as i64], (Kind::Float, Device::Cpu));
    }
    let out = Tensor::f_empty([rows as i64, out_dim as i64], (Kind::Float, Device::Cpu))?;
    // SAFETY: all three tensors are contiguous f32 on the CPU with the sizes
    // checked above; `out` was just allocated, so it aliases neither input,
    // and every tensor outlives the slices.
    let (w, x, y) = unsafe {
        (
            std::slice::from_raw_parts(weight.data_ptr() as *const f32, out_dim * in_dim),
            std::slice::from_raw_parts(xs.data_ptr() as *const f32, rows * in_dim),
            std::slice::from_raw_parts_mut(out.data_ptr() as *mut f32, rows * out_dim),
        )
    };
    run(w, x, y, rows, in_dim, out_dim);
    Ok(out)
}

/// Splits the output features into one contiguous block per thread.
fn run(w: &[f32], x: &[f32], y: &mut [f32], rows: usize, in_dim: usize, out_dim: usize) {
    let threads = rayon::current_num_threads().max(1);
    // Whole pairs of features per block, and blocks no smaller than 64
    // features: below that, waking a thread costs more than it saves.
    let block = out_dim.div_ceil(threads).next_multiple_of(2).max(64);
    let mut tasks: Vec<Vec<&mut [f32]>> = Vec::new();
    for row in y.chunks_mut(out_dim) {
        for (t, part) in row.chunks_mut(block).enumerate() {
            if tasks.len() <= t {
                tasks.push(Vec::with_capacity(rows));
            }
            tasks[t].push(part);
        }
    }
    let work = |t: usize, mut outs: Vec<&mut [f32]>| {
        let start = t * block;
        let len = outs.first().map_or(0, |o| o.len());
        block_product(
            &w[start * in_dim..(start + len) * in_dim],
            x,
            &mut outs,
            in_dim,
        );
    };
    if tasks.len() == 1 {
        if let Some(outs) = tasks.pop() {
            work(0, outs);
        }
        return;
    }
    rayon::scope(|s| {
        for (t, outs) in tasks.into_iter().enumerate() {
            s.spawn(move |_| work(t, outs));
        }
    });
}

/// `outs[r][o] = w[o] · x[r]` for the weight rows in `w`.
fn block_product(w: &[f32], x: &[f32], outs: &mut [&mut [f32]], in_dim: usize) {
    // (input rows, unroll): R x U accumulators, enough independent
    // multiply-adds to hide their latency, within the vector registers.
    macro_rules! dispatch {
        ($(($r:literal, $b:literal))*) => {
            match outs.len() {
                $($r => block_product_n::<$r, $b>(w, x, outs, in_dim),)*
                _ => unreachable!("rows are checked in linear"),
            }
        };
    }
    dispatch!((1, 4)(2, 4)(3, 2)(4, 2)(5, 1)(6, 1)(7, 1)(8, 1));
}

fn block_product_n<const R: usize, const U: usize>(
    w: &[f32],
    x: &[f32],
    outs: &mut [&mut [f32]],
    in_dim: usize,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F (checked just above).
            unsafe { x86::block_avx512::<R, U>(w, x, outs, in_dim) };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above).
            unsafe { x86::block_avx2::<R, U>(w, x, outs, in_dim) };
            return;
        }
    }
    block_portable::<R>(w, x, outs, in_dim);
}

/// Plain Rust; the compiler vectorises the 8-lane accumulators for the
/// target's baseline vector unit.
fn block_portable<const R: usize>(w: &[f32], x: &[f32], outs: &mut [&mut [f32]], in_dim: usize) {
    const LANES: usize = 8;
    let body = in_dim - in_dim % LANES;
    for (o, w_row) in w.chunks_exact(in_dim).enumerate() {
        let mut acc = [[0f32; LANES]; R];
        for i in (0..body).step_by(LANES) {
            let wv = &w_row[i..i + LANES];
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let xv = &x[r * in_dim + i..r * in_dim + i + LANES];
                for l in 0..LANES {
                    acc_r[l] += wv[l] * xv[l];
                }
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            let tail: f32 = (body..in_dim).map(|i| w_row[i] * x[r * in_dim + i]).sum();
            outs[r][o] = acc_r.iter().sum::<f32>() + tail;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// One kernel body for both vector widths: `$lanes` f32 per vector, and
    /// the intrinsics that make a zero vector, load, multiply-add, add and
    /// sum one.
    macro_rules! block_kernel {
        ($(#[$doc:meta])* $name:ident, $features:literal, $lanes:literal,
         $zero:ident, $load:ident, $fmadd:ident, $add:ident, $hsum:ident) => {
            $(#[$doc])*
            #[target_feature(enable = $features)]
            pub(super) fn $name<const R: usize, const U: usize>(
                w: &[f32],
                x: &[f32],
                outs: &mut [&mut [f32]],
                in_dim: usize,
            ) {
                const LANES: usize = $lanes;
                let body = in_dim - in_dim % LANES;
                let unrolled = body - body % (U * LANES);
                for (o, row) in w.chunks_exact(in_dim).enumerate() {
                    let mut acc = [[$zero(); R]; U];
                    let mut i = 0;
                    while i < unrolled {
                        for (u, acc_u) in acc.iter_mut().enumerate() {
                            // SAFETY: i + (u + 1) * LANES <= unrolled <= in_dim,
                            // the length of `row` and of every input row read.
                            unsafe {
                                let wv = $load(row.as_ptr().add(i + u * LANES));
                                for (r, a) in acc_u.iter_mut().enumerate() {
                                    *a = $fmadd(
                                        wv,
                                        $load(x.as_ptr().add(r * in_dim + i + u * LANES)),
                                        *a,
                                    );
                                }
                            }
                        }
                        i += U * LANES;
                    }
                    while i < body {
                        // SAFETY: i + LANES <= body <= in_dim, as above.
                        unsafe {
                            let wv = $load(row.as_ptr().add(i));
                            for (r, a) in acc[0].iter_mut().enumerate() {
                                *a = $fmadd(wv, $load(x.as_ptr().add(r * in_dim + i)), *a);
                            }
                        }
                        i += LANES;
                    }
                    for (r, out) in outs.iter_mut().enumerate() {
                        let xr = &x[r * in_dim..(r + 1) * in_dim];
                        let tail: f32 = (body..in_dim).map(|j| row[j] * xr[j]).sum();
                        let mut sum = acc[0][r];
                        for acc_u in &acc[1..] {
                            sum = $add(sum, acc_u[r]);
                        }
                        out[o] = $hsum(sum) + tail;
                    }
                }
            }
        };
    }

    block_kernel!(
        /// One weight row at a time, read front to back as one sequential
        /// stream (several rows in parallel measured slower); U chunks of
        /// LANES per pass with their own accumulators, so R x U multiply-adds
        /// are independent of the previous pass.
        block_avx512, "avx512f", 16,
        _mm512_setzero_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_reduce_add_ps
    );

    block_kernel!(
        /// As [`block_avx512`] with 8 lanes.
        block_avx2, "avx2,fma", 8,
        _mm256_setzero_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_add_ps, hsum256
    );

    #[target_feature(enable = "avx2")]
    fn hsum256(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps::<1>(v);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(xs: &Tensor, w: &Tensor) -> Tensor {
        xs.to_kind(Kind::Double)
            .matmul(&w.to_kind(Kind::Double).tr())
            .to_kind(Kind::Float)
    }

    #[test]
    fn matches_a_double_precision_matmul_for_every_row_count_and_odd_widths() {
        tch::manual_seed(3);
        // 37 inputs: a 16-lane body plus a tail; 131 outputs: an odd pair.
        for (in_dim, out_dim) in [(37, 131), (64, 2), (1024, 1)] {
            let w = Tensor::randn([out_dim, in_dim], (Kind::Float, Device::Cpu));
            for rows in 1..=MAX_ROWS as i64 {
                let xs = Tensor::randn([rows, in_dim], (Kind::Float, Device::Cpu));
                let got = linear(&xs, &w).expect("linear");
                let diff = (got - reference(&xs, &w)).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-4,
                    "{rows} rows, {in_dim}->{out_dim}: max diff {diff}"
                );
            }
        }
    }

    #[test]
    fn the_portable_kernel_agrees_with_the_vector_ones() {
        let (rows, in_dim, out_dim) = (3usize, 45usize, 7usize);
        let w: Vec<f32> = (0..out_dim * in_dim)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..rows * in_dim)
            .map(|i| ((i * 104_729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let mut a = vec![0f32; rows * out_dim];
        let mut b = vec![0f32; rows * out_dim];
        run(&w, &x, &mut a, rows, in_dim, out_dim);
        let mut outs: Vec<&mut [f32]> = b.chunks_mut(out_dim).collect();
        block_portable::<3>(&w, &x, &mut outs, in_dim);
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }

    /// `run` picks the widest kernel the CPU has, so the narrower one is
    /// checked here directly on machines that have both.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_vector_width_the_cpu_has_agrees_with_the_portable_kernel() {
        // 75 inputs: unrolled passes, single-vector passes and a tail.
        let (in_dim, out_dim) = (75usize, 5usize);
        let w: Vec<f32> = (0..out_dim * in_dim)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let x: Vec<f32> = (0..2 * in_dim)
            .map(|i| ((i * 104_729) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let mut expected = vec![0f32; 2 * out_dim];
        let mut outs: Vec<&mut [f32]> = expected.chunks_mut(out_dim).collect();
        block_portable::<2>(&w, &x, &mut outs, in_dim);

        for width in ["avx512f", "avx2"] {
            let mut got = vec![0f32; 2 * out_dim];
            let mut outs: Vec<&mut [f32]> = got.chunks_mut(out_dim).collect();
            match width {
                "avx512f" if std::arch::is_x86_feature_detected!("avx512f") => {
                    // SAFETY: the CPU has the kernel's features.
                    unsafe { x86::block_avx512::<2, 2>(&w, &x, &mut outs, in_dim) }
                }
                "avx2"
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma") =>
                {
                    // SAFETY: the CPU has the kernel's features.
                    unsafe { x86::block_avx2::<2, 2>(&w, &x, &mut outs, in_dim) }
                }
                _ => continue,
            }
            for (p, q) in expected.iter().zip(&got) {
                assert!((p - q).abs() < 1e-4, "{width}: {p} vs {q}");
            }
        }
    }

    #[test]
    fn refuses_too_many_rows_and_other_dtypes() {
        let w = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        assert!(linear(
            &Tensor::ones([MAX_ROWS as i64 + 1, 4], (Kind::Float, Device::Cpu)),
            &w
        )
        .is_err());
        assert!(linear(&Tensor::ones([1, 4], (Kind::Double, Device::Cpu)), &w).is_err());
        assert!(linear(&Tensor::ones([4, 2], (Kind::Float, Device::Cpu)).tr(), &w).is_err());
    }
}
