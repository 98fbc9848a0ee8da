"""The OpenVINO compile properties a model's config parameters ask for: one place for the runner
(openvino_runner.py, which gets this file copied beside it) and for whatever else runs the served graphs
as the runner does (the load test's compute bound). Standard library only."""
import json


def compile_properties(params, cache_dir, streams=1):
    """The compile_model properties a runner's parameters ask for, for `streams` runs computing at once (the
    runner's count of its ``streams`` parameter, batch_io.stream_count; 1 for one run at a time)."""
    properties = {
        "INFERENCE_PRECISION_HINT": params.get("inference_precision", "f32"),
        # intra_op_threads per stream; the streams share one copy of the weights.
        "INFERENCE_NUM_THREADS": int(params.get("intra_op_threads", "1")) * streams,
        "NUM_STREAMS": streams,
        # OpenVINO pins its threads to cores by default, and every process pins from the same first core:
        # two single-threaded instances (two Triton stubs) then shared one core of two (measured: 1.05 cores
        # used under load, half of what ONNX Runtime's instances used). The OS places unpinned threads.
        "ENABLE_CPU_PINNING": False,
        "CACHE_DIR": cache_dir,
    }
    properties.update(json.loads(params.get("compile_config", "{}")))
    return properties
