"""The committed gRPC code is what the .proto generates today."""
from __future__ import annotations

from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_current(tmp_path):
    proto = ROOT / "proto" / "toneserve" / "v1" / "toneserve.proto"
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
                        f"--grpc_python_out={tmp_path}", str(proto)]) == 0
    for name in ("toneserve_pb2.py", "toneserve_pb2.pyi", "toneserve_pb2_grpc.py"):
        assert (tmp_path / "toneserve" / "v1" / name).read_text() == (ROOT / "toneserve" / "v1" / name).read_text(), \
            f"{name} is stale: run scripts/gen-proto"
