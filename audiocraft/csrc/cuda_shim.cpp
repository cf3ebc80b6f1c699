// The CUDA pieces `tch` has no binding for: CUDA graphs
// (`at::cuda::CUDAGraph`), stream-ordered progress marks (events) and the
// device's name. Built by `build.rs` only when the linked libtorch has CUDA,
// and called from `src/cuda.rs`.
//
// Every entry point catches every C++ exception and returns its message as a
// malloc'd string (NULL on success), which the caller frees with
// `sc_free_message`: no exception may cross into Rust. Nothing here calls the
// CUDA runtime directly; everything goes through libtorch and c10, so the
// binary links against the libraries torch-sys already names, and against
// no CUDA toolkit.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>

// Declared as in ATen/cuda/CUDAContextLight.h, which is not included
// because it pulls in the cuBLAS, cuSPARSE and cuSOLVER headers.
namespace at::cuda {
TORCH_CUDA_CPP_API cudaDeviceProp* getDeviceProperties(c10::DeviceIndex device);
}

namespace {

char* message_of(const char* what) {
  const size_t len = std::strlen(what);
  char* out = static_cast<char*>(std::malloc(len + 1));
  if (out != nullptr) {
    std::memcpy(out, what, len + 1);
  }
  return out;
}

template <typename F>
char* guarded(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    // The first line; the rest is a C++ backtrace.
    return message_of(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return message_of(e.what());
  } catch (...) {
    return message_of("unknown C++ exception");
  }
}

// Makes `stream` the calling thread's current stream on its device until
// dropped, then restores the one that was current. (c10's CUDAStreamGuard
// does the same, but its header instantiates CUDA runtime calls inline.)
class CurrentStream {
 public:
  explicit CurrentStream(c10::cuda::CUDAStream stream)
      : previous_(c10::cuda::getCurrentCUDAStream(stream.device_index())) {
    c10::cuda::setCurrentCUDAStream(stream);
  }
  ~CurrentStream() { c10::cuda::setCurrentCUDAStream(previous_); }
  CurrentStream(const CurrentStream&) = delete;
  CurrentStream& operator=(const CurrentStream&) = delete;

 private:
  c10::cuda::CUDAStream previous_;
};

}  // namespace

// A graph being captured or ready to replay. While capturing it holds the
// guard that makes the capture stream current on this thread.
struct sc_graph {
  at::cuda::CUDAGraph graph;
  std::optional<CurrentStream> capturing;
};

// A stream of the pool, for the warm-up before a capture and the capture
// itself: captures cannot run on the default stream, and warming up on the
// stream that is then captured leaves nothing (cuBLAS workspaces, say) to be
// created during the capture.
struct sc_stream {
  c10::cuda::CUDAStream stream;
};

// Eager work moved to a side stream until exited.
struct sc_stream_scope {
  c10::cuda::CUDAStream origin;
  c10::cuda::CUDAStream side;
  std::optional<CurrentStream> current;
};

// A point in the current stream's work.
struct sc_mark {
  c10::Event event{c10::DeviceType::CUDA};
};

extern "C" {

void sc_free_message(char* message) { std::free(message); }

char* sc_device_name(int device, char* out, size_t len) {
  return guarded([&] {
    const cudaDeviceProp* props =
        at::cuda::getDeviceProperties(static_cast<c10::DeviceIndex>(device));
    std::strncpy(out, props->name, len);
    if (len > 0) {
      out[len - 1] = '\0';
    }
  });
}

char* sc_graph_pool(int device, uint64_t out[2]) {
  return guarded([&] {
    (void)device;
    const auto pool = at::cuda::graph_pool_handle();
    out[0] = pool.first;
    out[1] = pool.second;
  });
}

char* sc_stream_new(int device, sc_stream** out) {
  *out = nullptr;
  return guarded([&] {
    *out = new sc_stream{c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(device))};
  });
}

void sc_stream_free(sc_stream* stream) { delete stream; }

// Makes `stream` current on this thread, after the work already queued on
// the current stream.
char* sc_stream_enter(sc_stream* stream, sc_stream_scope** out) {
  *out = nullptr;
  return guarded([&] {
    auto origin = c10::cuda::getCurrentCUDAStream(stream->stream.device_index());
    c10::Event ready(c10::DeviceType::CUDA);
    ready.record(origin);
    ready.block(stream->stream);
    std::unique_ptr<sc_stream_scope> scope(new sc_stream_scope{origin, stream->stream, std::nullopt});
    scope->current.emplace(stream->stream);
    *out = scope.release();
  });
}

// Restores the previous stream, which then waits for the side stream's work.
char* sc_stream_exit(sc_stream_scope* scope) {
  char* error = guarded([&] {
    c10::Event done(c10::DeviceType::CUDA);
    done.record(scope->side);
    scope->current.reset();
    done.block(scope->origin);
  });
  delete scope;
  return error;
}

// Starts capturing the calling thread's work on `stream` into a new graph
// that allocates from `pool`. ThreadLocal mode: other threads (another
// model's worker in the same process) keep running eager CUDA work.
char* sc_graph_begin(sc_stream* stream, const uint64_t pool[2], sc_graph** out) {
  *out = nullptr;
  auto graph = std::make_unique<sc_graph>();
  char* error = guarded([&] {
    graph->capturing.emplace(stream->stream);
    graph->graph.capture_begin(
        at::cuda::MempoolId_t{pool[0], pool[1]}, cudaStreamCaptureModeThreadLocal);
  });
  if (error != nullptr) {
    graph->capturing.reset();
    return error;
  }
  *out = graph.release();
  return nullptr;
}

// Ends the capture (and instantiates the graph); the previous stream is
// current again whatever happens.
char* sc_graph_end(sc_graph* graph) {
  char* error = guarded([&] { graph->graph.capture_end(); });
  graph->capturing.reset();
  return error;
}

// Replays the graph on the calling thread's current stream.
char* sc_graph_replay(sc_graph* graph) {
  return guarded([&] { graph->graph.replay(); });
}

void sc_graph_free(sc_graph* graph) {
  // Destroying a graph whose capture failed may throw from CUDA cleanup.
  try {
    delete graph;
  } catch (...) {
  }
}

char* sc_mark_record(int device, sc_mark** out) {
  *out = nullptr;
  auto mark = std::make_unique<sc_mark>();
  char* error = guarded([&] {
    mark->event.record(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)));
  });
  if (error == nullptr) {
    *out = mark.release();
  }
  return error;
}

// Blocks the calling thread until the work before the mark has run.
char* sc_mark_wait(sc_mark* mark) {
  return guarded([&] { mark->event.synchronize(); });
}

void sc_mark_free(sc_mark* mark) { delete mark; }

}  // extern "C"
