"""Finds and imports the Python stubs that the build generates (<build>/python)."""
import importlib
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
DEFAULT_STUBS = os.path.join(REPO_ROOT, "build", "python")
STUBS_ENV = "ATTNSERVE_PYTHON_STUBS"

_MARKER = os.path.join("attnserve", "v1", "attention_service_pb2.py")


class StubsNotFound(ImportError):
    """The generated stubs are not where they were looked for."""


class Stubs:
    """The imported stub modules: grpc, api (attention_service_pb2), api_grpc, pe, tensor, mc, and
    the KServe v2 ones: v2 (inference.grpc_predict_v2_pb2), v2_grpc."""

    def __init__(self, directory):
        self.directory = directory
        if directory not in sys.path:
            sys.path.insert(0, directory)
        self.grpc = importlib.import_module("grpc")
        self.api = importlib.import_module("attnserve.v1.attention_service_pb2")
        self.api_grpc = importlib.import_module("attnserve.v1.attention_service_pb2_grpc")
        self.pe = importlib.import_module("attnserve.v1.positional_encoding_pb2")
        self.tensor = importlib.import_module("attnserve.v1.tensor_pb2")
        self.mc = importlib.import_module("attnserve.v1.model_config_pb2")
        self.v2 = importlib.import_module("inference.grpc_predict_v2_pb2")
        self.v2_grpc = importlib.import_module("inference.grpc_predict_v2_pb2_grpc")


_LOADED = {}


def stubs_dir(stubs=None):
    """The stubs folder: `stubs`, else $ATTNSERVE_PYTHON_STUBS, else <repo>/build/python."""
    return os.path.abspath(stubs or os.environ.get(STUBS_ENV) or DEFAULT_STUBS)


def load(stubs=None):
    """Imports the stubs from stubs_dir(stubs) once and returns them as a Stubs."""
    directory = stubs_dir(stubs)
    if directory not in _LOADED:
        if not os.path.isfile(os.path.join(directory, _MARKER)):
            raise StubsNotFound(
                f"no generated Python stubs in {directory!r} (build the project, e.g. "
                f"`cmake --build build`, then pass stubs=BUILD_DIR/python or set {STUBS_ENV})")
        _LOADED[directory] = Stubs(directory)
    return _LOADED[directory]
