"""Which runtime and graph each heavy model gets for a requested precision (catalog.choose), from the
export manifest's accuracy gates and the CPU's capabilities, and what the renderer makes of it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toneserve import contract, paths
from toneserve.console import CommandError
from toneserve.model_repository import catalog
from toneserve.model_repository.catalog import choose
from toneserve.model_repository.cpu import default_precision
from toneserve.model_repository.render import RUNNER_HELPERS, RUNNERS, render_repository
from toneserve.model_repository.spec import Batching, Ensemble, OnnxModel, Step, Tensor

BF16_CPU = ("FP32", "BF16", "INT8")
PLAIN_CPU = ("FP32", "INT8")
FOLDER = Path("/models/emotion2vec")


def manifest(fp32=True, bf16=True, int8=True, openvino=True, compile_config=None, int8w=False,
             int8w_bf16=False, int8_bf16=False) -> dict:
    """An export manifest with the ONNX Runtime int8 variant and (optionally) the openvino entry; its int8-weight
    precisions and int8-bf16 fail unless asked to pass (most tests are about the others)."""
    variants: dict = {"int8": {"from": "d", "files": {"model.int8.onnx": "s"}}}
    if openvino:
        int8_gate = {"passed": int8, "file": "model.int8.xml"}
        if compile_config:
            int8_gate["compile_config"] = compile_config
        variants["openvino"] = {
            "from": "d", "files": {"model.int8.xml": "s", "model.int8.bin": "s"}, "runtime": "openvino",
            "openvino_version": "2026.4.1",
            "precisions": {"fp32": {"passed": fp32}, "bf16": {"passed": bf16},
                           "int8w": {"passed": int8w, "file": "model.int8w.xml"},
                           "int8w-bf16": {"passed": int8w_bf16, "file": "model.int8w.xml"}, "int8": int8_gate,
                           "int8-bf16": {"passed": int8_bf16, "file": "model.int8.xml"}}}
    return {"model": "emotion2vec", "variants": variants}


def got(m, precision, runtime="auto", cpu=BF16_CPU):
    c = choose(FOLDER, m, "model.onnx", precision, runtime, cpu)
    return c.runtime, c.precision, c.graph.name


@pytest.mark.parametrize("precision, cpu, expected", [
    ("fp32", BF16_CPU, ("openvino", "fp32", "model.onnx")),
    # static int8 passed: a bf16 request serves it (BF16_PREFERENCE), the float layers in f32 as its gate judged
    ("bf16", BF16_CPU, ("openvino", "int8", "model.int8.xml")),
    # No native bf16: the int8 IR's float layers compute f32, as its gate judged them.
    ("bf16", PLAIN_CPU, ("openvino", "int8", "model.int8.xml")),
    ("int8", PLAIN_CPU, ("openvino", "int8", "model.int8.xml")),
    ("fp16", BF16_CPU, ("onnxruntime", "fp16", "model.fp16.onnx")),
])
def test_passed_gates_choose_openvino(precision, cpu, expected):
    m = manifest()
    m["variants"]["fp16"] = {"files": {"model.fp16.onnx": "s"}}
    assert got(m, precision, cpu=cpu) == expected


def test_a_bf16_request_prefers_static_int8_then_int8_weights_that_passed():
    every = manifest(int8w=True, int8w_bf16=True, int8_bf16=True)
    assert got(every, "bf16") == ("openvino", "int8-bf16", "model.int8.xml")
    # without native bf16, static int8 with its float layers in f32 (int8's own gate)
    assert got(every, "bf16", cpu=PLAIN_CPU) == ("openvino", "int8", "model.int8.xml")
    assert got(manifest(int8w=True, int8w_bf16=True), "bf16") == ("openvino", "int8", "model.int8.xml")
    # No native bf16 and no int8 graph passed: OpenVINO would compute f32 anyway, so bf16 is chosen (and labelled)
    # as fp32.
    assert got(manifest(int8=False), "bf16", cpu=PLAIN_CPU) == ("openvino", "fp32", "model.onnx")
    # static int8 failed (the SenseVoice encoder on random weights): int8 weights
    both = manifest(int8=False, int8w=True, int8w_bf16=True)
    assert got(both, "bf16") == ("openvino", "int8w-bf16", "model.int8w.xml")
    # int8w-bf16 needs native bf16; without it, int8 weights with f32 activations (bf16 would run f32 anyway).
    assert got(both, "bf16", cpu=PLAIN_CPU) == ("openvino", "int8w", "model.int8w.xml")
    # bf16 activations failed on int8 weights: bf16 on float weights is faster than int8w with f32 ones.
    assert got(manifest(int8=False, int8w=True), "bf16") == ("openvino", "bf16", "model.onnx")
    # bf16 failed both ways (the SenseVoice encoder on random weights): int8 weights, f32 activations.
    assert got(manifest(int8=False, bf16=False, int8w=True), "bf16") == ("openvino", "int8w", "model.int8w.xml")
    # Never for an explicit fp32 request, nor where ONNX Runtime or OpenVINO bf16 is forced.
    assert got(both, "fp32") == ("openvino", "fp32", "model.onnx")
    assert got(both, "bf16", runtime="openvino") == ("openvino", "bf16", "model.onnx")
    assert got(both, "bf16", runtime="onnxruntime") == ("onnxruntime", "fp32", "model.onnx")


def test_each_heavy_model_has_its_own_order():
    """The encoder takes static int8 with f32 float layers first (faster there than in bf16); the text classifier
    never takes static int8 (it held twice the memory of int8 weights)."""
    every = manifest(int8w=True, int8w_bf16=True, int8_bf16=True)

    def chosen(preference):
        return choose(FOLDER, every, "model.onnx", "bf16", "auto", BF16_CPU, preference).precision

    assert chosen(catalog.BF16_PREFERENCE) == "int8-bf16"
    assert chosen(catalog.ENCODER_BF16_PREFERENCE) == "int8"
    assert chosen(catalog.TEXT_BF16_PREFERENCE) == "int8w-bf16"
    assert not {"int8", "int8-bf16"} & set(catalog.TEXT_BF16_PREFERENCE)


def test_the_encoder_takes_onnx_runtimes_int8_where_its_gate_passed_and_openvinos_static_int8_did_not():
    def encoder(m):
        c = choose(FOLDER, m, "model.onnx", "bf16", "auto", BF16_CPU, catalog.ENCODER_BF16_PREFERENCE)
        return c.runtime, c.precision, c.graph.name

    m = manifest(int8=False, int8w=True, int8w_bf16=True)
    assert encoder(m) == ("openvino", "int8w-bf16", "model.int8w.xml")  # no gate recorded: not a candidate
    m["variants"]["int8"]["passed"] = False
    assert encoder(m) == ("openvino", "int8w-bf16", "model.int8w.xml")
    m["variants"]["int8"]["passed"] = True
    assert encoder(m) == ("onnxruntime", "int8", "model.int8.onnx")
    assert encoder(manifest(int8=True, int8w=True))[:2] == ("openvino", "int8")  # static int8 first
    # emotion2vec+ and the text classifier: OpenVINO's precisions only (ONNX Runtime's int8 was slower there)
    assert choose(FOLDER, m, "model.onnx", "bf16", "auto", BF16_CPU).runtime == "openvino"
    assert catalog.ORT_INT8 not in catalog.BF16_PREFERENCE + catalog.TEXT_BF16_PREFERENCE


def test_int8_weights_render_with_their_activation_precision(tmp_path):
    graph = tmp_path / "model.int8w.xml"
    graph.write_text("<net/>")
    graph.with_suffix(".bin").write_bytes(b"weights")
    for precision, hint in (("int8w", "f32"), ("int8w-bf16", "bf16"), ("int8-bf16", "bf16")):
        repo = tmp_path / precision
        render_repository(_models(graph, "openvino", precision), "cpu", repo)
        params = {k: v.string_value for k, v in _config(repo, "m").parameters.items()}
        assert params["graph_file"] == "model.xml" and params["inference_precision"] == hint
        assert (repo / "m" / "1" / "model.bin").read_bytes() == b"weights"
        assert _config(repo, "e").parameters[contract.PRECISION].string_value == precision


def test_failed_gates_fall_back_to_onnx_runtime():
    m = manifest(fp32=False, bf16=False, int8=False)
    assert got(m, "fp32") == ("onnxruntime", "fp32", "model.onnx")
    assert got(m, "bf16") == ("onnxruntime", "fp32", "model.onnx")  # ORT has no CPU bf16: the fp32 graph
    assert got(m, "int8") == ("onnxruntime", "int8", "model.int8.onnx")  # the dynamic-int8 graph
    # bf16 failed but OpenVINO f32 passed: a bf16 request is served as fp32 is, by OpenVINO f32, never bf16.
    assert got(manifest(bf16=False, int8=False), "bf16") == ("openvino", "fp32", "model.onnx")


def test_without_an_openvino_export_everything_is_onnx_runtime_as_before():
    m = manifest(openvino=False)
    for precision, expected in (("fp32", ("onnxruntime", "fp32", "model.onnx")),
                                ("bf16", ("onnxruntime", "fp32", "model.onnx")),
                                ("int8", ("onnxruntime", "int8", "model.int8.onnx"))):
        assert got(m, precision) == expected
        assert got(m, precision, cpu=PLAIN_CPU) == expected


def test_forced_runtimes():
    assert got(manifest(), "bf16", runtime="onnxruntime") == ("onnxruntime", "fp32", "model.onnx")
    assert got(manifest(), "int8", runtime="onnxruntime") == ("onnxruntime", "int8", "model.int8.onnx")
    # Forced OpenVINO ignores failed gates...
    assert got(manifest(fp32=False, int8=False), "int8", runtime="openvino") == ("openvino", "int8", "model.int8.xml")
    # ...but needs the export.
    with pytest.raises(CommandError, match="no openvino export"):
        got(manifest(openvino=False), "fp32", runtime="openvino")
    with pytest.raises(CommandError, match="gpu profile"):
        got(manifest(), "fp16", runtime="openvino")
    with pytest.raises(CommandError, match="unknown runtime"):
        got(manifest(), "fp32", runtime="tensorrt")


def test_the_int8_compile_config_travels_with_the_choice():
    c = choose(FOLDER, manifest(compile_config={"SNIPPETS_MODE": "DISABLE"}), "model.onnx", "int8", "auto", PLAIN_CPU)
    assert c.compile_config == {"SNIPPETS_MODE": "DISABLE"}
    assert choose(FOLDER, manifest(), "model.onnx", "fp32", "auto", PLAIN_CPU).compile_config == {}


def test_default_precision_follows_the_cpu():
    assert default_precision(BF16_CPU) == "bf16"
    assert default_precision(PLAIN_CPU) == "fp32"
    assert default_precision(()) == "fp32"  # openvino missing: no capabilities


def test_repository_names():
    assert [paths.repository_name("cpu", p) for p in ("fp32", "bf16", "int8")] == ["cpu", "cpu-bf16", "cpu-int8"]
    assert paths.repository_name("gpu", "fp16") == "gpu"


def _models(graph: Path, runtime: str, precision: str) -> list:
    tensor = Tensor("x", "float32", (-1,), ragged=True)
    model = OnnxModel(name="m", onnx_file=graph, batching=Batching(max_batch_size=4), inputs=(tensor,),
                      outputs=(Tensor("y", "float32", (-1,)),), runtime=runtime, precision=precision,
                      parameters={"intra_op_threads": "1"})
    ensemble = Ensemble(name="e", max_batch_size=4, inputs=model.inputs, outputs=model.outputs,
                        steps=(Step("m", {"x": "x"}, {"y": "y"}),),
                        parameters={contract.RUNTIME: runtime, contract.PRECISION: precision})
    return [model, ensemble]


def _config(repo: Path, name: str) -> mc.ModelConfig:
    return text_format.Parse((repo / name / "config.pbtxt").read_text(), mc.ModelConfig())


def test_an_openvino_model_renders_the_openvino_runner_and_the_shared_helpers(tmp_path):
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"onnx")
    repo = render_repository(_models(graph, "openvino", "bf16"), "cpu", tmp_path / "cpu")
    version = repo / "m" / "1"
    assert (version / "model.py").read_text() == (RUNNERS / "openvino_runner.py").read_text()
    assert {p.name for p in RUNNER_HELPERS} | {"batch_io.py", "model.onnx"} <= {p.name for p in version.iterdir()}
    params = {k: v.string_value for k, v in _config(repo, "m").parameters.items()}
    assert params["graph_file"] == "model.onnx" and params["inference_precision"] == "bf16"
    assert "onnx_file" not in params
    assert _config(repo, "e").parameters[contract.RUNTIME].string_value == "openvino"
    # The gpu profile ignores the runtime: Triton's onnxruntime backend, and the metadata says so.
    gpu = render_repository(_models(graph, "openvino", "bf16"), "gpu", tmp_path / "gpu")
    assert _config(gpu, "m").backend == "onnxruntime" and not (gpu / "m" / "1" / "model.py").exists()
    assert _config(gpu, "e").parameters[contract.RUNTIME].string_value == "onnxruntime"


def test_an_ir_graph_places_xml_and_bin_and_runs_int8_at_f32_elsewhere(tmp_path):
    graph = tmp_path / "model.int8.xml"
    graph.write_text("<net/>")
    graph.with_suffix(".bin").write_bytes(b"weights")
    repo = render_repository(_models(graph, "openvino", "int8"), "cpu", tmp_path / "cpu")
    version = repo / "m" / "1"
    assert (version / "model.xml").read_text() == "<net/>" and (version / "model.bin").read_bytes() == b"weights"
    params = {k: v.string_value for k, v in _config(repo, "m").parameters.items()}
    assert params["graph_file"] == "model.xml" and params["inference_precision"] == "f32"
    with pytest.raises(ValueError, match="gpu profile serves ONNX"):
        render_repository(_models(graph, "openvino", "int8"), "gpu", tmp_path / "gpu")


def test_an_onnx_runtime_model_keeps_the_onnx_runner(tmp_path):
    graph = tmp_path / "model.onnx"
    graph.write_bytes(b"onnx")
    repo = render_repository(_models(graph, "onnxruntime", "fp32"), "cpu", tmp_path / "cpu")
    assert (repo / "m" / "1" / "model.py").read_text() == (RUNNERS / "onnx_runner.py").read_text()
    params = {k: v.string_value for k, v in _config(repo, "m").parameters.items()}
    assert params["onnx_file"] == "model.onnx" and "graph_file" not in params
    assert json.loads(params["trim"]) == {}


def test_export_renders_a_bf16_cpu_repository_when_the_openvino_variant_is_built():
    from toneserve.cli import _renderings

    assert _renderings(["cpu", "gpu"], ["int8", "fp16", "openvino"]) == [
        ("cpu", "fp32"), ("cpu", "bf16"), ("cpu", "int8"), ("gpu", "fp16")]
    assert _renderings(["cpu"], ["int8"]) == [("cpu", "fp32"), ("cpu", "int8")]


def test_summary_names_what_each_heavy_model_got(tmp_path):
    from toneserve.model_repository.catalog import summary

    graph = tmp_path / "g.onnx"
    models = [OnnxModel(name=name, onnx_file=graph, batching=Batching(max_batch_size=1), inputs=(), outputs=(),
                        runtime=runtime, precision=precision)
              for name, runtime, precision in (("emotion2vec", "openvino", "bf16"),
                                               ("sensevoice_frontend", "onnxruntime", "fp32"),
                                               ("sensevoice_encoder", "onnxruntime", "fp32"))]
    assert summary(models) == "emotion2vec openvino bf16, sensevoice_encoder onnxruntime fp32"
