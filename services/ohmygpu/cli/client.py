"""The CLI's connection to the daemon: address and token from settings, errors turned into
one-line messages, and never a hang when no daemon is running."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

import grpc
from ohmygpu.api.v1 import (
    audio_pb2_grpc,
    chat_pb2_grpc,
    embeddings_pb2_grpc,
    jobs_pb2_grpc,
    models_pb2_grpc,
    system_pb2_grpc,
)
from ohmygpu.core.errors import OmgError
from ohmygpu.core.settings import Settings

T = TypeVar("T")

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3
EXIT_AUTH = 4


def _credentials(ca_path: str) -> grpc.ChannelCredentials:
    """TLS credentials trusting OMG_TLS_CA, or the system roots when it is empty."""
    if not ca_path:
        return grpc.ssl_channel_credentials()
    try:
        return grpc.ssl_channel_credentials(root_certificates=open(ca_path, "rb").read())
    except OSError as e:
        raise CliError(f"cannot read OMG_TLS_CA {ca_path}: {e.strerror}", EXIT_USAGE) from None


class CliError(Exception):
    """A failure to report in one line, with the exit code to use."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class Client:
    """Stubs for the daemon's services over one channel."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        try:
            self.addr, tls = settings.client_target()
        except OmgError as e:
            raise CliError(e.message, EXIT_USAGE) from None
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", 64 << 20),
                   # Long-lived clients (top, the REPL, omg mcp) find a restarted daemon or a link
                   # that came back within ~3 s, not after gRPC's default backoff of up to 2 min.
                   ("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 3000)]
        if tls:
            self.channel = grpc.secure_channel(self.addr, _credentials(settings.tls_ca), options=options)
        else:
            self.channel = grpc.insecure_channel(self.addr, options=options)
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {settings.token}"),) if settings.token else ())
        self.models = models_pb2_grpc.ModelServiceStub(self.channel)
        self.chat = chat_pb2_grpc.ChatServiceStub(self.channel)
        self.system = system_pb2_grpc.SystemServiceStub(self.channel)
        self.jobs = jobs_pb2_grpc.JobServiceStub(self.channel)
        self.audio = audio_pb2_grpc.AudioServiceStub(self.channel)
        self.embeddings = embeddings_pb2_grpc.EmbeddingServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def fail(self, e: grpc.RpcError) -> NoReturn:
        code = e.code() if hasattr(e, "code") else None
        if code == grpc.StatusCode.UNAVAILABLE:
            details = e.details() if hasattr(e, "details") else ""
            if "ssl" in (details or "").lower() or "handshake" in (details or "").lower():
                raise CliError(f"TLS with the daemon at {self.addr} failed ({details}); check OMG_TLS_CA "
                               "and that the daemon serves TLS", EXIT_NO_DAEMON) from None
            raise CliError(f"no omg daemon is answering at {self.addr}; start one with `omg serve` "
                           "(or point OMG_HOST at a running one)", EXIT_NO_DAEMON) from None
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            details = e.details() if hasattr(e, "details") else ""
            raise CliError(f"the daemon at {self.addr} refused: {details}; set the token with OMG_TOKEN "
                           "(or --token)", EXIT_AUTH) from None
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise CliError(f"the daemon at {self.addr} did not answer in time") from None
        details = e.details() if hasattr(e, "details") else str(e)
        raise CliError(details or str(code)) from None

    def call(self, method: Callable[..., T], request: Any, *, timeout: float = 10.0) -> T:
        """A unary call; raises CliError."""
        try:
            return method(request, timeout=timeout, metadata=self.metadata)
        except grpc.RpcError as e:
            self.fail(e)

    def stream(self, method: Callable[..., Any], request: Any) -> Any:
        """A server-streaming call object (iterable, cancellable)."""
        return method(request, metadata=self.metadata)

    def iterate(self, call: Any) -> Iterator[Any]:
        """Iterate a streaming call; raises CliError on failure."""
        try:
            yield from call
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED:
                return
            self.fail(e)


def die(message: str, code: int = EXIT_ERROR) -> NoReturn:
    print(f"omg: {message}", file=sys.stderr)
    raise SystemExit(code)
