"""The KServe v2 / Open Inference Protocol from Python, over gRPC (the generated
inference.GRPCInferenceService stubs) or over HTTP (the standard library's urllib; the tensors as
binary data both ways), with numpy in and out."""
import json
import socket
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from . import _stubs
from ._client import AttnservError, _bf16_bits, _Closing

# numpy ↔ KServe datatypes (little-endian).
_NUMPY = {"FP32": "<f4", "FP16": "<f2", "INT32": "<i4", "INT64": "<i8"}
# HTTP statuses as the gRPC code names AttnservError carries.
_HTTP_CODES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
               404: "NOT_FOUND", 405: "UNIMPLEMENTED", 411: "INVALID_ARGUMENT",
               413: "RESOURCE_EXHAUSTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED",
               500: "INTERNAL", 501: "UNIMPLEMENTED", 503: "UNAVAILABLE",
               504: "DEADLINE_EXCEEDED"}


def _model_path(model):
    """/v2/models/<model> with the name escaped (any character may be in a name)."""
    return "/v2/models/" + urllib.parse.quote(model, safe="")


def _raw(array, datatype):
    """An array as the little-endian bytes of `datatype` (FP32, FP16, BF16, INT32, INT64)."""
    if datatype == "BF16":
        return _bf16_bits(np.asarray(array, dtype=np.float32)).tobytes()
    return np.ascontiguousarray(array, dtype=_NUMPY[datatype]).tobytes()


def _array(data, datatype, shape):
    """Raw bytes of `datatype` as a numpy array of `shape` (BF16 and FP16 widened to float32)."""
    if datatype == "BF16":
        bits = np.frombuffer(data, dtype="<u2").astype("<u4") << 16
        return bits.view("<f4").reshape(shape).astype(np.float32)
    values = np.frombuffer(data, dtype=_NUMPY[datatype]).reshape(shape)
    return values.astype(np.float32) if datatype == "FP16" else values.copy()


def _datatype(array, float_datatype):
    """The datatype an input is sent as: integers INT64, floating values `float_datatype`."""
    kind = np.asarray(array).dtype.kind
    return "INT64" if kind in "iub" else float_datatype


class KServeClient(_Closing):
    """A client of the KServe v2 door:

        with KServeClient("127.0.0.1:8000", protocol="http") as k:     # or "127.0.0.1:50051", "grpc"
            k.ready(), k.model_metadata("demo-rope")
            out = k.infer("demo-rope", {"input": x}, parameters={"causal": True})["output"]
            bias = k.infer("attnserve.position_bias", {},
                           parameters={"encoding": '{"alibi": {}}', "num_heads": 4, "q_len": 3})

    `infer` sends each input raw (floating arrays as `datatype`: FP32, FP16 or BF16; integer
    arrays as INT64) and returns every output as a numpy array (FP16/BF16 widened to float32).
    `token`: a bearer token; `timeout`: seconds per call (HTTP: also the request's `timeout`
    parameter). Failures raise AttnservError with the gRPC code name (HTTP statuses mapped).
    """

    def __init__(self, address, protocol="grpc", stubs=None, timeout=30.0, token=None):
        if protocol not in ("grpc", "http"):
            raise ValueError(f"protocol={protocol!r}: expected 'grpc' or 'http'")
        self.address, self.protocol, self.timeout = address, protocol, timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        if protocol == "grpc":
            stubs = _stubs.load(stubs)
            self._grpc = stubs.grpc
            self._v2 = stubs.v2
            self.channel = self._grpc.insecure_channel(
                address, options=[("grpc.max_receive_message_length", -1),
                                  ("grpc.max_send_message_length", -1)])
            self.stub = stubs.v2_grpc.GRPCInferenceServiceStub(self.channel)
            self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self):
        if self.protocol == "grpc":
            self.channel.close()

    # --- health and metadata --------------------------------------------------------------

    def live(self):
        if self.protocol == "http":
            return self._get("/v2/health/live", ok_only=False)[0] == 200
        return self._call("ServerLive", self._v2.ServerLiveRequest()).live

    def ready(self):
        if self.protocol == "http":
            return self._get("/v2/health/ready", ok_only=False)[0] == 200
        return self._call("ServerReady", self._v2.ServerReadyRequest()).ready

    def model_ready(self, model):
        if self.protocol == "http":
            return self._get(f"{_model_path(model)}/ready", ok_only=False)[0] == 200
        return self._call("ModelReady", self._v2.ModelReadyRequest(name=model)).ready

    def server_metadata(self):
        """{"name", "version", "extensions"}"""
        if self.protocol == "http":
            return json.loads(self._get("/v2")[1])
        m = self._call("ServerMetadata", self._v2.ServerMetadataRequest())
        return {"name": m.name, "version": m.version, "extensions": list(m.extensions)}

    def model_metadata(self, model):
        """{"name", "versions", "platform", "inputs": [{"name", "datatype", "shape"}], "outputs"}"""
        if self.protocol == "http":
            return json.loads(self._get(_model_path(model))[1])
        m = self._call("ModelMetadata", self._v2.ModelMetadataRequest(name=model))
        tensors = lambda ts: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}  # noqa: E731
                              for t in ts]
        return {"name": m.name, "versions": list(m.versions), "platform": m.platform,
                "inputs": tensors(m.inputs), "outputs": tensors(m.outputs)}

    # --- inference ------------------------------------------------------------------------

    def infer(self, model, inputs, parameters=None, outputs=None, datatype="FP32", request_id=""):
        """Runs `model` on `inputs` ({name: array}); returns {output name: numpy array}."""
        if datatype not in ("FP32", "FP16", "BF16"):
            raise ValueError(f"datatype={datatype!r}: expected 'FP32', 'FP16' or 'BF16'")
        tensors = [(name, np.asarray(array), _datatype(array, datatype))
                   for name, array in inputs.items()]
        if self.protocol == "http":
            return self._infer_http(model, tensors, parameters or {}, outputs, request_id)
        return self._infer_grpc(model, tensors, parameters or {}, outputs, request_id)

    def _infer_grpc(self, model, tensors, parameters, outputs, request_id):
        request = self._v2.ModelInferRequest(model_name=model, id=request_id)
        for name, array, datatype in tensors:
            request.inputs.add(name=name, datatype=datatype, shape=list(array.shape))
            request.raw_input_contents.append(_raw(array, datatype))
        for key, value in parameters.items():
            parameter = request.parameters[key]
            if isinstance(value, bool):
                parameter.bool_param = value
            elif isinstance(value, int):
                parameter.int64_param = value
            elif isinstance(value, float):
                parameter.double_param = value
            else:
                parameter.string_param = str(value)
        for name in outputs or ():
            request.outputs.add(name=name)
        response = self._call("ModelInfer", request)
        if response.raw_output_contents:
            return {t.name: _array(response.raw_output_contents[i], t.datatype, tuple(t.shape))
                    for i, t in enumerate(response.outputs)}
        # A request without raw inputs (none at all) is answered with typed contents.
        typed = {"FP32": "fp32_contents", "INT32": "int_contents", "INT64": "int64_contents"}
        return {t.name: np.array(getattr(t.contents, typed[t.datatype]),
                                 dtype=_NUMPY[t.datatype]).reshape(tuple(t.shape))
                for t in response.outputs}

    def _infer_http(self, model, tensors, parameters, outputs, request_id):
        header = {
            "inputs": [{"name": name, "datatype": datatype, "shape": list(array.shape),
                        "parameters": {"binary_data_size": len(_raw(array, datatype))}}
                       for name, array, datatype in tensors],
            "parameters": dict(parameters, binary_data_output=True),
        }
        if self.timeout is not None:
            header["parameters"]["timeout"] = int(self.timeout * 1e6)
        if request_id:
            header["id"] = request_id
        if outputs:
            header["outputs"] = [{"name": name} for name in outputs]
        head = json.dumps(header).encode()
        body = head + b"".join(_raw(array, datatype) for _, array, datatype in tensors)
        headers = dict(self._headers, **{"Inference-Header-Content-Length": str(len(head)),
                                         "Content-Type": "application/octet-stream"})
        status, data, reply_headers = self._request(f"{_model_path(model)}/infer", body, headers)
        length = int(reply_headers.get("Inference-Header-Content-Length", len(data)))
        answer, offset, result = json.loads(data[:length]), length, {}
        for output in answer["outputs"]:
            size = output["parameters"]["binary_data_size"]
            result[output["name"]] = _array(data[offset:offset + size], output["datatype"],
                                            tuple(output["shape"]))
            offset += size
        return result

    # --- transport ------------------------------------------------------------------------

    def _call(self, method, request):
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout,
                                              metadata=self._metadata)
        except self._grpc.RpcError as error:
            raise AttnservError.from_rpc_error(error) from None

    def _get(self, path, ok_only=True):
        """(status, body); with ok_only False a failure is its status (0: no answer at all)."""
        if not ok_only:
            try:
                return self._request(path)[:2]
            except AttnservError as error:
                return getattr(error, "http_status", 0), b""
        return self._request(path)[:2]

    def _request(self, path, body=None, headers=None):
        request = urllib.request.Request(f"http://{self.address}{path}", data=body,
                                         headers=headers or self._headers,
                                         method="POST" if body is not None else "GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return reply.status, reply.read(), reply.headers
        except urllib.error.HTTPError as error:
            text = error.read().decode("utf-8", "replace")
            try:
                details = json.loads(text)["error"]
            except (ValueError, KeyError, TypeError):
                details = text
            failure = AttnservError(_HTTP_CODES.get(error.code, "UNKNOWN"), details, error)
            failure.http_status = error.code
            raise failure from None
        except (urllib.error.URLError, socket.timeout, ConnectionError) as error:
            timed_out = isinstance(error, socket.timeout) or isinstance(
                getattr(error, "reason", None), socket.timeout)
            raise AttnservError("DEADLINE_EXCEEDED" if timed_out else "UNAVAILABLE",
                                str(getattr(error, "reason", error)), error) from None
