#!/usr/bin/python3
"""A minimal attnserve client: list models, encode embeddings, run attention.

Run with Debian's Python (which has python3-grpcio, python3-protobuf, python3-numpy) against a
running server, with the stubs that the build generates:

    /usr/bin/python3 clients/python/example.py --address 127.0.0.1:50051 --stubs build/python
"""
import argparse
import sys

import numpy as np


def to_tensor(tensor_pb2, array):
    """numpy float32 array -> attnserve.v1.Tensor (row-major, little-endian)."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return tensor_pb2.Tensor(dtype=tensor_pb2.FLOAT32, shape=array.shape, data=array.tobytes())


def from_tensor(tensor_pb2, tensor):
    """attnserve.v1.Tensor (FLOAT32) -> numpy array of its shape."""
    assert tensor.dtype == tensor_pb2.FLOAT32, tensor.dtype
    return np.frombuffer(tensor.data, dtype="<f4").reshape(tuple(tensor.shape))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:50051")
    parser.add_argument("--stubs", default="build/python", help="folder of the generated stubs")
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)

    import grpc
    from attnserve.v1 import attention_service_pb2 as api
    from attnserve.v1 import attention_service_pb2_grpc as api_grpc
    from attnserve.v1 import positional_encoding_pb2 as pe
    from attnserve.v1 import tensor_pb2

    with grpc.insecure_channel(args.address) as channel:
        stub = api_grpc.AttentionServiceStub(channel)

        for model in stub.ListModels(api.ListModelsRequest()).models:
            print(f"model {model.name}: d_model={model.d_model} heads={model.num_heads} "
                  f"kv_heads={model.num_kv_heads} head_dim={model.head_dim}")

        # Encode: x·sqrt(d) + P[pos] with the tensor2tensor sinusoidal table, positions 10..15.
        x = np.random.default_rng(0).standard_normal((1, 6, 8), dtype=np.float32)
        encoded = stub.Encode(api.EncodeRequest(
            input=to_tensor(tensor_pb2, x),
            encoding=pe.PositionalEncoding(
                sinusoidal=pe.SinusoidalEncoding(variant=pe.TENSOR2TENSOR)),
            position_offset=10,
            input_scale=float(np.sqrt(8))))
        print("encoded[0, 0] =", np.round(from_tensor(tensor_pb2, encoded.output)[0, 0], 4))

        # Attend: causal self-attention on the demo model, with the attention map.
        query = np.random.default_rng(1).standard_normal((1, 5, 512), dtype=np.float32)
        attended = stub.Attend(api.AttendRequest(
            model="demo-sinusoidal", query=to_tensor(tensor_pb2, query), causal=True,
            return_attention=True))
        output = from_tensor(tensor_pb2, attended.output)
        attention = from_tensor(tensor_pb2, attended.attention)
        print("attended output shape", output.shape, "attention shape", attention.shape)
        print("head 0 attention map (rows: queries, columns: keys):")
        print(np.round(attention[0, 0], 3))

        # Errors carry the field and the value.
        try:
            stub.Attend(api.AttendRequest(
                model="demo-sinusoidal", query=to_tensor(tensor_pb2, np.zeros((1, 2, 700)))))
        except grpc.RpcError as error:
            print(f"error: {error.code().name}: {error.details()}")


if __name__ == "__main__":
    main()
