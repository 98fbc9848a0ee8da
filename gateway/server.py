"""The gateway's gRPC server: Analyzer plus standard health checking and reflection."""
from __future__ import annotations

import logging

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from ..v1 import toneserve_pb2, toneserve_pb2_grpc
from .inference import Inference
from .service import AnalyzerService, Settings

log = logging.getLogger("toneserve.gateway")


class GatewayStartError(RuntimeError):
    """The gateway could not start; the message says why and what to do."""
SERVICE_NAME = toneserve_pb2.DESCRIPTOR.services_by_name["Analyzer"].full_name


class Gateway:
    def __init__(self, triton_url: str, host: str = "127.0.0.1", port: int = 50051,
                 settings: Settings = Settings()):
        self.triton_url = triton_url
        self.address = f"{host}:{port}"
        self.settings = settings
        self.inference: Inference | None = None
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.inference = Inference(self.triton_url)
        await self.inference.load()
        # Room for the largest accepted audio plus the rest of the message.
        max_message = self.settings.limits.max_bytes + 1024 * 1024
        self.server = grpc.aio.server(options=[("grpc.max_receive_message_length", max_message),
                                               ("grpc.so_reuseport", 0)])
        toneserve_pb2_grpc.add_AnalyzerServicer_to_server(AnalyzerService(self.inference, self.settings),
                                                          self.server)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self.server)
        try:
            self.server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise GatewayStartError(f"cannot listen on {self.address} ({exc}); "
                                    "is the port taken? choose another with --port") from None
        await self.server.start()
        await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        log.info("gateway listening on %s (Triton at %s)", self.address, self.triton_url)

    async def wait(self) -> None:
        await self.server.wait_for_termination()

    async def stop(self, grace: float = 5.0) -> None:
        if self.server is not None:
            await self.server.stop(grace)
        if self.inference is not None:
            await self.inference.close()
