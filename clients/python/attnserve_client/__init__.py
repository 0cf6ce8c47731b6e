"""attnserve_client: a numpy-friendly Python client (and CLI) for the attnserve gRPC service.

    import sys; sys.path.insert(0, "clients/python")
    from attnserve_client import Client, AttnservError

    with Client("127.0.0.1:50051", stubs="build/python") as c:
        c.list_models()
        enc = c.encode(x, encoding='sinusoidal { variant: VASWANI }', position_offset=10)
        out, att = c.attend("demo-rope", x, causal=True, return_attention=True)
        with c.decode_session("demo-rope") as s:
            y0 = s.step(x[:, :3]); y1 = s.step(x[:, 3:])

The KServe v2 door, over gRPC or HTTP (docs/kserve.md):

    from attnserve_client import KServeClient
    with KServeClient("127.0.0.1:8000", protocol="http") as k:
        out = k.infer("demo-rope", {"input": x}, parameters={"causal": True})["output"]

The generated stubs are found through `stubs=`, else $ATTNSERVE_PYTHON_STUBS, else
<repo>/build/python. CLI: `python3 -m attnserve_client --help`.
"""
from ._client import AttnservError, Client, DecodeSession
from ._kserve import KServeClient
from ._stubs import DEFAULT_STUBS, StubsNotFound, load as load_stubs, stubs_dir

AttnserveError = AttnservError  # alias with the service's spelling

__all__ = ["AttnservError", "AttnserveError", "Client", "DecodeSession", "KServeClient",
           "DEFAULT_STUBS",
           "StubsNotFound", "load_stubs", "stubs_dir"]
