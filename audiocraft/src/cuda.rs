//! The CUDA pieces `tch` has no binding for, through the C++ shim in
//! `csrc/cuda_shim.cpp`: CUDA graphs (capture a decoding step once, replay
//! it for every position), marks in the stream's work to follow the device's
//! progress without draining its queue, and the GPU's name.
//!
//! The shim is compiled only when the linked libtorch has CUDA and the CUDA
//! runtime headers are found (see `build.rs`); without it every function here
//! answers [`CudaError::NotCompiled`] or `None`, and callers decode eagerly.
//! This module must never be the only path to a result: a graph is an
//! optimisation of work that can always run eagerly.
//!
//! The workspace denies `unsafe`; this module is the exception, because it
//! calls C functions. Each pointer it holds comes from the shim and goes back
//! to the shim's matching free function exactly once.
#![allow(unsafe_code)]

use tch::{Device, TchError};

/// Why a CUDA-only operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CudaError {
    #[error(
        "this build has no CUDA shim (libtorch without CUDA, or no CUDA headers at build time)"
    )]
    NotCompiled,
    #[error("{0:?} is not a CUDA device")]
    NotCuda(Device),
    #[error("{0}")]
    Torch(String),
}

impl From<CudaError> for TchError {
    fn from(err: CudaError) -> Self {
        TchError::Torch(err.to_string())
    }
}

/// Whether this build can capture CUDA graphs at all.
pub const fn graphs_compiled() -> bool {
    cfg!(sc_cuda_shim)
}

fn index(device: Device) -> Result<i32, CudaError> {
    match device {
        Device::Cuda(i) => i32::try_from(i).map_err(|_| CudaError::NotCuda(device)),
        other => Err(CudaError::NotCuda(other)),
    }
}

#[cfg(sc_cuda_shim)]
mod ffi {
    use std::ffi::c_char;

    #[repr(C)]
    pub struct Graph {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct Stream {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct StreamScope {
        _private: [u8; 0],
    }
    #[repr(C)]
    pub struct Mark {
        _private: [u8; 0],
    }

    extern "C" {
        pub fn sc_free_message(message: *mut c_char);
        pub fn sc_device_name(device: i32, out: *mut c_char, len: usize) -> *mut c_char;
        pub fn sc_graph_pool(device: i32, out: *mut u64) -> *mut c_char;
        pub fn sc_stream_new(device: i32, out: *mut *mut Stream) -> *mut c_char;
        pub fn sc_stream_free(stream: *mut Stream);
        pub fn sc_stream_enter(stream: *mut Stream, out: *mut *mut StreamScope) -> *mut c_char;
        pub fn sc_stream_exit(scope: *mut StreamScope) -> *mut c_char;
        pub fn sc_graph_begin(
            stream: *mut Stream,
            pool: *const u64,
            out: *mut *mut Graph,
        ) -> *mut c_char;
        pub fn sc_graph_end(graph: *mut Graph) -> *mut c_char;
        pub fn sc_graph_replay(graph: *mut Graph) -> *mut c_char;
        pub fn sc_graph_free(graph: *mut Graph);
        pub fn sc_mark_record(device: i32, out: *mut *mut Mark) -> *mut c_char;
        pub fn sc_mark_wait(mark: *mut Mark) -> *mut c_char;
        pub fn sc_mark_free(mark: *mut Mark);
    }

    /// Turns the shim's error convention (NULL or a malloc'd message) into
    /// a result, freeing the message.
    pub fn check(message: *mut c_char) -> Result<(), super::CudaError> {
        if message.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null return is a NUL-terminated string the shim
        // allocated for us; it is read once and freed once.
        let text = unsafe { std::ffi::CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above; not used after this.
        unsafe { sc_free_message(message) };
        Err(super::CudaError::Torch(text))
    }
}

/// The name the driver gives the device (`NVIDIA H200`), or `None` on a
/// CPU, or without the shim.
pub fn device_name(device: Device) -> Option<String> {
    let index = index(device).ok()?;
    #[cfg(sc_cuda_shim)]
    {
        let mut buf = vec![0u8; 256];
        // SAFETY: `buf` is writable for its length; the shim writes a
        // NUL-terminated string of at most that many bytes.
        let result =
            ffi::check(unsafe { ffi::sc_device_name(index, buf.as_mut_ptr().cast(), buf.len()) });
        if result.is_err() {
            return None;
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        Some(String::from_utf8_lossy(&buf[..end]).into_owned())
    }
    #[cfg(not(sc_cuda_shim))]
    {
        let _ = index;
        None
    }
}

/// A memory pool that graphs replayed one after another share, so that a
/// set of graphs costs the memory of one.
#[derive(Debug)]
pub struct GraphPool {
    #[cfg_attr(not(sc_cuda_shim), allow(dead_code))]
    id: [u64; 2],
}

impl GraphPool {
    pub fn new(device: Device) -> Result<Self, CudaError> {
        let _index = index(device)?;
        #[cfg(sc_cuda_shim)]
        {
            let mut id = [0u64; 2];
            // SAFETY: `id` has the two slots the shim writes.
            ffi::check(unsafe { ffi::sc_graph_pool(_index, id.as_mut_ptr()) })?;
            Ok(Self { id })
        }
        #[cfg(not(sc_cuda_shim))]
        {
            Err(CudaError::NotCompiled)
        }
    }
}

/// Why a capture produced no graph: `Body` is the captured code's own
/// error (it may also fail eagerly), `Capture` is CUDA refusing to capture
/// it (eager execution is the way on).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{0}")]
    Body(TchError),
    #[error("CUDA graph capture failed: {0}")]
    Capture(CudaError),
}

/// A captured CUDA graph: the kernels some code launched, replayable as one
/// launch with the same buffers.
#[derive(Debug)]
pub struct CudaGraph {
    #[cfg(sc_cuda_shim)]
    raw: std::ptr::NonNull<ffi::Graph>,
}

impl CudaGraph {
    /// Captures what `body` launches on the calling thread, on `stream`,
    /// without running it. Everything `body` touches must stay allocated, at
    /// the same addresses, for as long as the graph is replayed; `body` must
    /// not wait for the device or copy from the host.
    pub fn capture(
        stream: &SideStream,
        pool: &GraphPool,
        body: impl FnOnce() -> Result<(), TchError>,
    ) -> Result<Self, CaptureError> {
        #[cfg(sc_cuda_shim)]
        {
            let mut raw = std::ptr::null_mut();
            // SAFETY: `stream` is live, `pool.id` has two slots; `raw`
            // receives a graph the shim allocated, or stays null on error.
            ffi::check(unsafe {
                ffi::sc_graph_begin(stream.raw.as_ptr(), pool.id.as_ptr(), &mut raw)
            })
            .map_err(CaptureError::Capture)?;
            let Some(raw) = std::ptr::NonNull::new(raw) else {
                return Err(CaptureError::Capture(CudaError::Torch(
                    "the shim returned no graph".to_owned(),
                )));
            };
            let graph = Self { raw };
            let body_result = body();
            // The capture must end (and the stream be restored) whatever
            // the body did.
            // SAFETY: `raw` is the live graph begun above.
            let end_result = ffi::check(unsafe { ffi::sc_graph_end(graph.raw.as_ptr()) });
            body_result.map_err(CaptureError::Body)?;
            end_result.map_err(CaptureError::Capture)?;
            Ok(graph)
        }
        #[cfg(not(sc_cuda_shim))]
        {
            let _ = (stream, pool, body);
            Err(CaptureError::Capture(CudaError::NotCompiled))
        }
    }

    /// Launches the captured work on the calling thread's current stream.
    pub fn replay(&self) -> Result<(), CudaError> {
        #[cfg(sc_cuda_shim)]
        {
            // SAFETY: `raw` is a graph whose capture ended successfully.
            ffi::check(unsafe { ffi::sc_graph_replay(self.raw.as_ptr()) })
        }
        #[cfg(not(sc_cuda_shim))]
        {
            Err(CudaError::NotCompiled)
        }
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        #[cfg(sc_cuda_shim)]
        // SAFETY: freed once, here; nothing uses the graph afterwards.
        unsafe {
            ffi::sc_graph_free(self.raw.as_ptr())
        };
    }
}

/// A stream of libtorch's pool for warm-ups and captures, which cannot run
/// on the default stream.
#[derive(Debug)]
pub struct SideStream {
    #[cfg(sc_cuda_shim)]
    raw: std::ptr::NonNull<ffi::Stream>,
}

impl SideStream {
    pub fn new(device: Device) -> Result<Self, CudaError> {
        let _index = index(device)?;
        #[cfg(sc_cuda_shim)]
        {
            let mut raw = std::ptr::null_mut();
            // SAFETY: `raw` receives a stream the shim allocated (or null).
            ffi::check(unsafe { ffi::sc_stream_new(_index, &mut raw) })?;
            std::ptr::NonNull::new(raw)
                .map(|raw| Self { raw })
                .ok_or_else(|| CudaError::Torch("the shim returned no stream".to_owned()))
        }
        #[cfg(not(sc_cuda_shim))]
        {
            Err(CudaError::NotCompiled)
        }
    }

    /// Runs `body` eagerly on this stream, after the current stream's queued
    /// work, and makes the current stream wait for it afterwards. The
    /// warm-up before a capture runs so (as `torch.cuda.graph` asks).
    pub fn run<T>(&self, body: impl FnOnce() -> Result<T, TchError>) -> Result<T, TchError> {
        #[cfg(sc_cuda_shim)]
        {
            let mut scope = std::ptr::null_mut();
            // SAFETY: the stream is live; `scope` receives a scope the shim
            // allocated (or null).
            ffi::check(unsafe { ffi::sc_stream_enter(self.raw.as_ptr(), &mut scope) })?;
            let result = body();
            if !scope.is_null() {
                // SAFETY: the scope entered above, exited (and freed) once.
                ffi::check(unsafe { ffi::sc_stream_exit(scope) })?;
            }
            result
        }
        #[cfg(not(sc_cuda_shim))]
        {
            let _ = body;
            Err(CudaError::NotCompiled.into())
        }
    }
}

impl Drop for SideStream {
    fn drop(&mut self) {
        #[cfg(sc_cuda_shim)]
        // SAFETY: freed once, here (a pool stream itself lives on in libtorch).
        unsafe {
            ffi::sc_stream_free(self.raw.as_ptr())
        };
    }
}

/// A point in the current stream's work: [`StreamMark::wait`] returns once
/// the device has done everything queued before it, without waiting for
/// what was queued after.
#[derive(Debug)]
pub struct StreamMark {
    #[cfg(sc_cuda_shim)]
    raw: std::ptr::NonNull<ffi::Mark>,
}

impl StreamMark {
    pub fn record(device: Device) -> Result<Self, CudaError> {
        let _index = index(device)?;
        #[cfg(sc_cuda_shim)]
        {
            let mut raw = std::ptr::null_mut();
            // SAFETY: `raw` receives a mark the shim allocated (or null).
            ffi::check(unsafe { ffi::sc_mark_record(_index, &mut raw) })?;
            std::ptr::NonNull::new(raw)
                .map(|raw| Self { raw })
                .ok_or_else(|| CudaError::Torch("the shim returned no mark".to_owned()))
        }
        #[cfg(not(sc_cuda_shim))]
        {
            Err(CudaError::NotCompiled)
        }
    }

    pub fn wait(&self) -> Result<(), CudaError> {
        #[cfg(sc_cuda_shim)]
        {
            // SAFETY: `raw` is a live mark.
            ffi::check(unsafe { ffi::sc_mark_wait(self.raw.as_ptr()) })
        }
        #[cfg(not(sc_cuda_shim))]
        {
            Err(CudaError::NotCompiled)
        }
    }
}

impl Drop for StreamMark {
    fn drop(&mut self) {
        #[cfg(sc_cuda_shim)]
        // SAFETY: freed once, here.
        unsafe {
            ffi::sc_mark_free(self.raw.as_ptr())
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_only_calls_refuse_a_cpu_device_with_a_message() {
        assert_eq!(device_name(Device::Cpu), None);
        assert_eq!(
            GraphPool::new(Device::Cpu).map(|_| ()),
            Err(CudaError::NotCuda(Device::Cpu))
        );
        assert!(StreamMark::record(Device::Cpu).is_err());
        assert!(SideStream::new(Device::Cpu).is_err());
    }
}
