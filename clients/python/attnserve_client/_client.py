"""The numpy-friendly attnserve client."""
import queue
import threading

import numpy as np

from . import _stubs


class AttnservError(Exception):
    """An RPC failed. `code` is the grpc.StatusCode name ("NOT_FOUND", ...), `details` the
    server's message (it names the field and the value); `rpc_error` is the grpc.RpcError."""

    def __init__(self, code, details, rpc_error=None):
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.rpc_error = rpc_error

    @classmethod
    def from_rpc_error(cls, error):
        code = error.code() if hasattr(error, "code") else None
        name = getattr(code, "name", None) or "UNKNOWN"
        details = (error.details() if hasattr(error, "details") else None) or str(error)
        return cls(name, details, error)


# --------------------------------------------------------------------------------------------
# Tensors


def _bf16_bits(array):
    """float32 -> bfloat16 bits (uint16), round to nearest even; NaN stays NaN."""
    bits = np.ascontiguousarray(array, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    nan = np.isnan(np.asarray(array, dtype=np.float32))
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def _float_array(array, what):
    a = np.asarray(array)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{what}: expected a numeric array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype="<f4")


# --------------------------------------------------------------------------------------------


class _Closing:
    """`with` support for a client: closes it on leaving the block."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


class Client(_Closing):
    """A channel to an attnserve server and its AttentionService, with numpy in and out.

        with Client("127.0.0.1:50051") as c:
            out = c.attend("demo-rope", np.random.randn(1, 5, 256), causal=True)

    `stubs`: folder of the generated stubs (default $ATTNSERVE_PYTHON_STUBS, else
    <repo>/build/python). `timeout`: deadline of each unary RPC in seconds (None: none).
    TLS: `tls_ca` (PEM file of the CA that signed the server's certificate) switches the channel
    to TLS; `tls_cert` and `tls_key` (PEM files) add a client certificate for mutual TLS.
    `token`: a bearer token sent with every call (`authorization: Bearer <token>`).
    Every RPC failure is raised as AttnservError.
    """

    def __init__(self, address="127.0.0.1:50051", stubs=None, timeout=30.0, tls_ca=None,
                 tls_cert=None, tls_key=None, token=None):
        self.stubs = _stubs.load(stubs)
        self.address = address
        self.timeout = timeout
        self._grpc = self.stubs.grpc
        self._api = self.stubs.api
        self._pe = self.stubs.pe
        self._t = self.stubs.tensor
        # Responses are as large as the inputs: lift gRPC's 4 MiB default receive cap (the server
        # bounds messages with --max_message_bytes).
        options = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]
        if tls_ca is None and (tls_cert or tls_key):
            raise ValueError("tls_cert/tls_key need tls_ca (mutual TLS is TLS)")
        if tls_ca is not None:
            def read(path):
                with open(path, "rb") as f:
                    return f.read()
            credentials = self._grpc.ssl_channel_credentials(
                root_certificates=read(tls_ca),
                private_key=read(tls_key) if tls_key else None,
                certificate_chain=read(tls_cert) if tls_cert else None)
            self.channel = self._grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = self._grpc.insecure_channel(address, options=options)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.stub = self.stubs.api_grpc.AttentionServiceStub(self.channel)

    # --- lifetime -------------------------------------------------------------------------

    def close(self):
        self.channel.close()

    # --- conversions ----------------------------------------------------------------------

    def to_tensor(self, array, dtype="float32", what="input"):
        """numpy array -> attnserve.v1.Tensor, FLOAT32 (float64 etc. converted) or BFLOAT16."""
        a = _float_array(array, what)
        if dtype in ("float32", "f32", None):
            return self._t.Tensor(dtype=self._t.FLOAT32, shape=a.shape, data=a.tobytes())
        if dtype in ("bfloat16", "bf16"):
            return self._t.Tensor(dtype=self._t.BFLOAT16, shape=a.shape,
                                  data=_bf16_bits(a).tobytes())
        raise ValueError(f"dtype={dtype!r}: expected 'float32' or 'bfloat16'")

    def _ids_tensor(self, ids):
        a = np.ascontiguousarray(ids, dtype="<i8")
        return self._t.Tensor(dtype=self._t.INT64, shape=a.shape, data=a.tobytes())

    def from_tensor(self, tensor):
        """attnserve.v1.Tensor (FLOAT32 or BFLOAT16) -> float32 numpy array of its shape."""
        shape = tuple(tensor.shape)
        if tensor.dtype == self._t.FLOAT32:
            return np.frombuffer(tensor.data, dtype="<f4").reshape(shape).astype(np.float32)
        if tensor.dtype == self._t.BFLOAT16:
            bits = np.frombuffer(tensor.data, dtype="<u2").astype("<u4") << 16
            return bits.view("<f4").reshape(shape).astype(np.float32)
        raise ValueError(f"unexpected tensor dtype {tensor.dtype}")

    def encoding(self, encoding):
        """A PositionalEncoding from a message, a text-format string ('rope { theta: 500000 }')
        or a dict ({"sinusoidal": {"variant": "VASWANI"}}); None stays None."""
        if encoding is None or isinstance(encoding, self._pe.PositionalEncoding):
            return encoding
        if isinstance(encoding, str):
            from google.protobuf import text_format
            return text_format.Parse(encoding, self._pe.PositionalEncoding())
        if isinstance(encoding, dict):
            from google.protobuf import json_format
            return json_format.ParseDict(encoding, self._pe.PositionalEncoding())
        raise TypeError(f"encoding: expected a PositionalEncoding, a text-format string or a "
                        f"dict, got {type(encoding).__name__}")

    def _dtype_enum(self, dtype):
        if dtype in (None, "float32", "f32"):
            return self._t.FLOAT32
        if dtype in ("bfloat16", "bf16"):
            return self._t.BFLOAT16
        raise ValueError(f"compute_dtype={dtype!r}: expected 'float32' or 'bfloat16'")

    def _call(self, method, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout,
                                              metadata=self.metadata)
        except self._grpc.RpcError as error:
            raise AttnservError.from_rpc_error(error) from None

    def _model_dict(self, config):
        kind = config.encoding.WhichOneof("kind") if config.HasField("encoding") else None
        heads = config.num_heads
        return {
            "name": config.name,
            "d_model": config.d_model,
            "num_heads": heads,
            "num_kv_heads": config.num_kv_heads or heads,
            "head_dim": config.head_dim or (config.d_model // heads if heads else 0),
            "encoding": kind or "none",
            "description": config.description,
            "max_positions": config.max_positions,
            "config": config,
        }

    # --- RPCs -----------------------------------------------------------------------------

    def list_models(self):
        """The loaded models, sorted by name, as dicts: name, d_model, num_heads, num_kv_heads,
        head_dim (defaults resolved), encoding (the kind: "rope", "alibi", ... or "none"),
        description, max_positions, config (the ModelConfig message)."""
        reply = self._call("ListModels", self._api.ListModelsRequest())
        return [self._model_dict(m) for m in reply.models]

    def get_model(self, name):
        """One loaded model as a dict (see list_models)."""
        return self._model_dict(self._call("GetModel", self._api.GetModelRequest(name=name)).config)

    def encode(self, x, encoding=None, model=None, position_offset=0, position_ids=None,
               input_scale=None, num_heads=0, head_dim=0, dtype="float32"):
        """Applies a positional encoding to x [batch, seq, d_model] ([seq, d_model] is taken as
        batch 1 and returned 2-D). Returns float32 (bf16 results widened)."""
        a = np.asarray(x)
        squeeze = a.ndim == 2
        if squeeze:
            a = a[None]
        req = self._api.EncodeRequest(input=self.to_tensor(a, dtype), model=model or "",
                                      position_offset=position_offset, num_heads=num_heads,
                                      head_dim=head_dim)
        enc = self.encoding(encoding)
        if enc is not None:
            req.encoding.CopyFrom(enc)
        if position_ids is not None:
            req.position_ids.CopyFrom(self._ids_tensor(position_ids))
        if input_scale is not None:
            req.input_scale = float(input_scale)
        out = self.from_tensor(self._call("Encode", req).output)
        return out[0] if squeeze else out

    def attend(self, model, x, causal=False, context=None, key_lengths=None, position_offset=0,
               position_ids=None, return_attention=False, compute_dtype="float32",
               dtype="float32"):
        """Runs `model`'s attention layer on x [batch, q_len, d_model] (cross-attention over
        `context` [batch, kv_len, d_model] when given). Returns the output, or (output,
        attention [batch, heads, q_len, kv_len]) with return_attention."""
        req = self._api.AttendRequest(model=model, query=self.to_tensor(x, dtype, "x"),
                                      causal=causal, position_offset=position_offset,
                                      return_attention=return_attention,
                                      compute_dtype=self._dtype_enum(compute_dtype))
        if context is not None:
            req.context.CopyFrom(self.to_tensor(context, dtype, "context"))
        if key_lengths is not None:
            req.key_lengths.extend(int(n) for n in key_lengths)
        if position_ids is not None:
            req.position_ids.CopyFrom(self._ids_tensor(position_ids))
        reply = self._call("Attend", req)
        out = self.from_tensor(reply.output)
        return (out, self.from_tensor(reply.attention)) if return_attention else out

    def sdpa(self, q, k, v, causal=False, scale=None, key_lengths=None, encoding=None,
             return_attention=False, position_offset=0, compute_dtype="float32",
             t5_table=None, cope_pos_emb=None):
        """Weight-free attention: q [B, H, Sq, hd], k and v [B, Hkv, Sk, hd]. Returns the output
        [B, H, Sq, hd], or (output, attention [B, H, Sq, Sk]) with return_attention."""
        req = self._api.SdpaRequest(q=self.to_tensor(q, what="q"), k=self.to_tensor(k, what="k"),
                                    v=self.to_tensor(v, what="v"), causal=causal,
                                    return_attention=return_attention,
                                    position_offset=position_offset,
                                    compute_dtype=self._dtype_enum(compute_dtype))
        if scale is not None:
            req.scale = float(scale)
        if key_lengths is not None:
            req.key_lengths.extend(int(n) for n in key_lengths)
        enc = self.encoding(encoding)
        if enc is not None:
            req.encoding.CopyFrom(enc)
        if t5_table is not None:
            req.t5_table.CopyFrom(self.to_tensor(t5_table, what="t5_table"))
        if cope_pos_emb is not None:
            req.cope_pos_emb.CopyFrom(self.to_tensor(cope_pos_emb, what="cope_pos_emb"))
        reply = self._call("ScaledDotProductAttention", req)
        out = self.from_tensor(reply.output)
        return (out, self.from_tensor(reply.attention)) if return_attention else out

    def position_bias(self, num_heads=None, q_len=None, kv_len=0, causal=False, encoding=None,
                      model=None, t5_table=None):
        """The score bias [heads, q_len, kv_len] of ALiBi / T5 (inline `encoding` with
        `num_heads`, or `model`'s); masked entries are -inf."""
        if q_len is None:
            raise ValueError("position_bias: q_len is required")
        req = self._api.PositionBiasRequest(model=model or "", num_heads=num_heads or 0,
                                            q_len=q_len, kv_len=kv_len, causal=causal)
        enc = self.encoding(encoding)
        if enc is not None:
            req.encoding.CopyFrom(enc)
        if t5_table is not None:
            req.t5_table.CopyFrom(self.to_tensor(t5_table, what="t5_table"))
        return self.from_tensor(self._call("PositionBias", req).bias)

    def decode_session(self, model, timeout=None):
        """One Decode stream on `model`: session.step(x [1, n, d_model] or [n, d_model]) sends
        the next tokens and returns their output; close() (or leaving a `with`) ends the stream
        and frees the server's K/V cache. `timeout`: deadline of the whole stream (None: none)."""
        return DecodeSession(self, model, timeout)


class DecodeSession:
    """Incremental decoding over one bidirectional Decode stream (requests go through a queue,
    responses are read one per step)."""

    _END = object()

    def __init__(self, client, model, timeout=None):
        self._client = client
        self.model = model
        self._requests = queue.Queue()
        self._lock = threading.Lock()
        self._first = True
        self._closed = False
        self.position = 0          # position of the next token
        self._responses = client.stub.Decode(self._request_iter(), timeout=timeout,
                                             metadata=client.metadata)

    def _request_iter(self):
        while True:
            item = self._requests.get()
            if item is self._END:
                return
            yield item

    def step(self, x, return_attention=False, dtype="float32"):
        """Sends tokens x and returns their output (float32, the shape of x), or (output,
        attention [1, heads, new_len, cached_len + new_len]) with return_attention."""
        a = np.asarray(x)
        squeeze = a.ndim == 2
        if squeeze:
            a = a[None]
        api = self._client._api
        with self._lock:
            if self._closed:
                raise RuntimeError("decode session is closed")
            req = api.DecodeRequest(query=self._client.to_tensor(a, dtype, "x"),
                                    return_attention=return_attention)
            if self._first:
                req.model = self.model
                self._first = False
            self._requests.put(req)
            try:
                reply = next(self._responses)
            except StopIteration:
                self._closed = True
                raise AttnservError("UNKNOWN", "Decode stream ended without a response") from None
            except self._client._grpc.RpcError as error:
                self._closed = True
                self._requests.put(self._END)
                raise AttnservError.from_rpc_error(error) from None
            self.position = reply.position + a.shape[1]
        out = self._client.from_tensor(reply.output)
        if squeeze:
            out = out[0]
        return (out, self._client.from_tensor(reply.attention)) if return_attention else out

    def close(self):
        """Ends the stream (half-close, then waits for the server's end of it)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._requests.put(self._END)
            try:
                for _ in self._responses:
                    pass
            except self._client._grpc.RpcError as error:
                if error.code() != self._client._grpc.StatusCode.CANCELLED:
                    raise AttnservError.from_rpc_error(error) from None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
