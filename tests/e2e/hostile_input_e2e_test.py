#!/usr/bin/python3
"""Table-driven hostile input across every RPC: malformed ranks, shapes, byte lengths, dtypes,
empty, huge, negative and overflowing dimensions, non-finite values, bad encoding parameters,
position overflow, key_lengths out of range, unknown models and methods, Decode misuse. Each row
asserts the exact status code and that the message names the field (and the offending value);
after every row the server must still answer a correct request.

    /usr/bin/python3 tests/e2e/hostile_input_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import os
import sys
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import (grpc, pb, pe_pb2, tensor_pb2, ServerTestCase, f32_tensor,  # noqa: E402
                               int_tensor)

INVALID = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
OUT_OF_RANGE = "OUT_OF_RANGE"


def f32(*shape, value=0.0):
    return f32_tensor(np.full(shape, value, np.float32))


def raw(dtype, shape, nbytes):
    return tensor_pb2.Tensor(dtype=dtype, shape=list(shape), data=b"\0" * nbytes)


def vaswani():
    return pe_pb2.PositionalEncoding(sinusoidal=pe_pb2.SinusoidalEncoding(variant=pe_pb2.VASWANI))


def rope(**kwargs):
    return pe_pb2.PositionalEncoding(rope=pe_pb2.RotaryEncoding(**kwargs))


def alibi():
    return pe_pb2.PositionalEncoding(alibi=pe_pb2.AlibiEncoding())


def t5():
    return pe_pb2.PositionalEncoding(t5=pe_pb2.T5RelativeBias())


def cope():
    return pe_pb2.PositionalEncoding(cope=pe_pb2.CopeEncoding(npos_max=4))


QKV = dict(q=f32(1, 2, 3, 8), k=f32(1, 2, 3, 8), v=f32(1, 2, 3, 8))
BIG = 2 ** 40
INT64_MAX = 2 ** 63 - 1

# (name, rpc, request fields, code, substrings the message must contain)
CASES = [
    # Encode: tensors
    ("encode_no_input", "Encode", dict(encoding=vaswani()), INVALID, ["input"]),
    ("encode_rank_2", "Encode", dict(input=f32(3, 8), encoding=vaswani()), INVALID,
     ["input.shape"]),
    ("encode_rank_4", "Encode", dict(input=f32(1, 1, 3, 8), encoding=vaswani()), INVALID,
     ["input.shape"]),
    ("encode_negative_dim", "Encode", dict(input=raw(tensor_pb2.FLOAT32, [1, -3, 8], 0),
                                           encoding=vaswani()), INVALID, ["input.shape", "-3"]),
    ("encode_overflowing_dims", "Encode",
     dict(input=raw(tensor_pb2.FLOAT32, [BIG, BIG, 8], 4), encoding=vaswani()), INVALID,
     ["input.data", "[1099511627776,1099511627776,8]", "2^63"]),
    ("encode_short_data", "Encode", dict(input=raw(tensor_pb2.FLOAT32, [1, 3, 8], 10),
                                         encoding=vaswani()), INVALID, ["input.data"]),
    ("encode_unspecified_dtype", "Encode",
     dict(input=raw(tensor_pb2.DATA_TYPE_UNSPECIFIED, [1, 3, 8], 96), encoding=vaswani()),
     INVALID, ["input.dtype"]),
    ("encode_int32_input", "Encode", dict(input=raw(tensor_pb2.INT32, [1, 3, 8], 96),
                                          encoding=vaswani()), INVALID, ["input.dtype"]),
    ("encode_empty_dim", "Encode", dict(input=raw(tensor_pb2.FLOAT32, [1, 0, 8], 0),
                                        encoding=vaswani()), INVALID, ["input.shape[1]=0"]),
    ("encode_batch_above_limit", "Encode", dict(input=f32(5, 2, 8), encoding=vaswani()),
     INVALID, ["max_batch", "5"]),
    # Encode: encodings and positions
    ("encode_no_encoding", "Encode", dict(input=f32(1, 2, 8)), INVALID, ["encoding"]),
    ("encode_empty_encoding", "Encode", dict(input=f32(1, 2, 8),
                                             encoding=pe_pb2.PositionalEncoding()), INVALID,
     ["encoding"]),
    ("encode_bad_sinusoidal_base", "Encode",
     dict(input=f32(1, 2, 8), encoding=pe_pb2.PositionalEncoding(
         sinusoidal=pe_pb2.SinusoidalEncoding(variant=pe_pb2.VASWANI, base=0.5))),
     INVALID, ["encoding.sinusoidal.base=0.5"]),
    ("encode_rope_negative_theta", "Encode",
     dict(input=f32(1, 2, 8), encoding=rope(theta=-1.0), num_heads=1), INVALID,
     ["encoding.rope.theta=-1"]),
    ("encode_rope_heads_not_splitting", "Encode",
     dict(input=f32(1, 2, 8), encoding=rope(), num_heads=3), INVALID,
     ["num_heads=3", "d_model=8"]),
    ("encode_negative_offset", "Encode", dict(input=f32(1, 2, 8), encoding=vaswani(),
                                              position_offset=-5), INVALID,
     ["position_offset=-5"]),
    ("encode_offset_overflow", "Encode", dict(input=f32(1, 2, 8), encoding=vaswani(),
                                              position_offset=INT64_MAX), INVALID,
     ["position_offset=9223372036854775807"]),
    ("encode_position_ids_wrong_length", "Encode",
     dict(input=f32(1, 2, 8), encoding=vaswani(),
          position_ids=int_tensor([0, 1, 2], tensor_pb2.INT64)), INVALID, ["position_ids"]),
    ("encode_position_ids_float", "Encode",
     dict(input=f32(1, 2, 8), encoding=vaswani(), position_ids=f32(2)), INVALID,
     ["position_ids.dtype"]),
    ("encode_position_id_negative", "Encode",
     dict(input=f32(1, 2, 8), encoding=vaswani(),
          position_ids=int_tensor([0, -7], tensor_pb2.INT64)), INVALID,
     ["position_ids[1]=-7"]),
    ("encode_unknown_model", "Encode", dict(input=f32(1, 2, 256), model="nope"), NOT_FOUND,
     ["nope"]),
    ("encode_nan_input_scale", "Encode", dict(input=f32(1, 2, 8), encoding=vaswani(),
                                              input_scale=float("nan")), INVALID,
     ["input_scale=nan"]),
    ("encode_learned_past_table", "Encode", dict(input=f32(1, 2, 256), model="demo-learned",
                                                 position_offset=8191), OUT_OF_RANGE,
     ["position 8192", "learned table", "[0, 8192)"]),
    # Attend
    ("attend_no_model", "Attend", dict(query=f32(1, 2, 512)), INVALID, ["model"]),
    ("attend_unknown_model", "Attend", dict(model="no-such", query=f32(1, 2, 512)), NOT_FOUND,
     ["no-such"]),
    ("attend_no_query", "Attend", dict(model="demo-sinusoidal"), INVALID, ["query"]),
    ("attend_d_model_mismatch", "Attend", dict(model="demo-sinusoidal", query=f32(1, 3, 700)),
     INVALID, ["query.shape[2]=700", "d_model=512"]),
    ("attend_bf16_odd_bytes", "Attend",
     dict(model="demo-sinusoidal", query=raw(tensor_pb2.BFLOAT16, [1, 1, 512], 1023)), INVALID,
     ["query.data"]),
    ("attend_sequence_above_limit", "Attend", dict(model="demo-sinusoidal", query=f32(1, 513, 512)),
     INVALID, ["query.shape[1]=513", "--max_sequence_length=512"]),
    ("attend_context_width", "Attend", dict(model="demo-sinusoidal", query=f32(1, 2, 512),
                                            context=f32(1, 4, 100)), INVALID,
     ["context.shape[2]=100"]),
    ("attend_context_batch", "Attend", dict(model="demo-sinusoidal", query=f32(1, 2, 512),
                                            context=f32(2, 4, 512)), INVALID,
     ["context.shape[0]=2"]),
    ("attend_key_lengths_count", "Attend", dict(model="demo-sinusoidal", query=f32(2, 2, 512),
                                                key_lengths=[1]), INVALID, ["key_lengths"]),
    ("attend_key_length_too_long", "Attend", dict(model="demo-sinusoidal", query=f32(1, 2, 512),
                                                  key_lengths=[3]), INVALID,
     ["key_lengths[0]=3"]),
    ("attend_key_length_negative", "Attend", dict(model="demo-sinusoidal",
                                                  query=f32(1, 2, 512), key_lengths=[-1]),
     INVALID, ["key_lengths[0]=-1"]),
    ("attend_bad_compute_dtype", "Attend", dict(model="demo-sinusoidal", query=f32(1, 2, 512),
                                                compute_dtype=tensor_pb2.INT32), INVALID,
     ["compute_dtype"]),
    ("attend_position_id_overflow", "Attend",
     dict(model="demo-rope", query=f32(1, 2, 256),
          position_ids=int_tensor([0, 2 ** 62], tensor_pb2.INT64)), INVALID,
     ["position_ids[1]=4611686018427387904"]),
    ("attend_attention_too_large", "Attend",
     dict(model="demo-sinusoidal", query=f32(1, 400, 512), return_attention=True), INVALID,
     ["1·8·400·400", "max_attention_elements"]),
    # CoPE holds a block of rows unless the map is returned; returned, it is held whole.
    ("attend_cope_attention_too_large", "Attend",
     dict(model="demo-cope", query=f32(2, 512, 256), causal=True, return_attention=True),
     INVALID, ["2·4·512·512", "max_attention_elements", "held whole"]),
    # 4·512 tokens on a d_model 512 layer: 6.4e9 FLOPs (projections 4.3e9, attention 2.1e9).
    ("attend_flops_too_many", "Attend", dict(model="demo-sinusoidal", query=f32(4, 512, 512)),
     INVALID, ["6.44245e+09 FLOPs", "--max_request_flops=5e+09"]),
    # ScaledDotProductAttention
    ("sdpa_q_rank_3", "ScaledDotProductAttention", dict(QKV, q=f32(2, 3, 8)), INVALID,
     ["q.shape"]),
    ("sdpa_k_head_dim", "ScaledDotProductAttention", dict(QKV, k=f32(1, 2, 3, 4)), INVALID,
     ["k.shape=[1,2,3,4]", "q.shape=[1,2,3,8]"]),
    ("sdpa_v_shape", "ScaledDotProductAttention", dict(QKV, v=f32(1, 2, 5, 8)), INVALID,
     ["v.shape"]),
    ("sdpa_heads_not_divisible", "ScaledDotProductAttention",
     dict(q=f32(1, 3, 3, 8), k=f32(1, 2, 3, 8), v=f32(1, 2, 3, 8)), INVALID,
     ["k.shape[1]=2", "q.shape[1]=3"]),
    ("sdpa_nan_scale", "ScaledDotProductAttention", dict(QKV, scale=float("nan")), INVALID,
     ["scale=nan"]),
    ("sdpa_cope_without_embeddings", "ScaledDotProductAttention", dict(QKV, encoding=cope()),
     INVALID, ["cope_pos_emb"]),
    # CoPE's work does not grow with head_dim: 4·4·512·512 scores at 2048 FLOPs each (8.6e9) are
    # past --max_request_flops=5e9, though their products (6.7e7 FLOPs) are not.
    ("sdpa_cope_work_too_much", "ScaledDotProductAttention",
     dict(q=f32(4, 4, 512, 4), k=f32(4, 4, 512, 4), v=f32(4, 4, 512, 4), encoding=cope(),
          cope_pos_emb=f32(4, 4)), INVALID,
     ["8.65", "FLOPs (8.58993e+09 of them CoPE's, 2048 a score)", "--max_request_flops=5e+09"]),
    ("sdpa_t5_without_table", "ScaledDotProductAttention", dict(QKV, encoding=t5()), INVALID,
     ["t5_table"]),
    ("sdpa_key_lengths_count", "ScaledDotProductAttention", dict(QKV, key_lengths=[1, 2]),
     INVALID, ["key_lengths"]),
    # PositionBias
    ("bias_nothing_named", "PositionBias", dict(q_len=2, kv_len=2), INVALID,
     ["encoding or model"]),
    ("bias_alibi_zero_heads", "PositionBias", dict(encoding=alibi(), q_len=2, kv_len=2),
     INVALID, ["num_heads=0"]),
    ("bias_q_len_huge", "PositionBias", dict(encoding=alibi(), num_heads=2, q_len=BIG, kv_len=2),
     INVALID, ["q_len=1099511627776", "--max_sequence_length"]),
    ("bias_t5_table_shape", "PositionBias", dict(encoding=t5(), num_heads=2, q_len=2, kv_len=2,
                                                 t5_table=f32(3, 2)), INVALID, ["t5_table"]),
    ("bias_unknown_model", "PositionBias", dict(model="nope", q_len=2, kv_len=2), NOT_FOUND,
     ["nope"]),
    # Models
    ("get_model_empty_name", "GetModel", dict(), INVALID, ["empty"]),
    ("get_model_unknown", "GetModel", dict(name="nope"), NOT_FOUND, ["nope"]),
]

REQUEST_TYPES = {"Encode": pb.EncodeRequest, "Attend": pb.AttendRequest,
                 "ScaledDotProductAttention": pb.SdpaRequest,
                 "PositionBias": pb.PositionBiasRequest, "GetModel": pb.GetModelRequest}


class HostileInputTableTest(ServerTestCase):
    SERVER_ARGS = ("--max_batch=4", "--max_sequence_length=512",
                   f"--max_attention_elements={2 ** 20}", "--max_request_flops=5e9")

    def assertStillServes(self):
        x = np.ones((1, 2, 512), np.float32)
        out = self.attend(model="demo-sinusoidal", query=f32_tensor(x)).output
        self.assertEqual(list(out.shape), [1, 2, 512])

    def test_table(self):
        self.assertGreaterEqual(len(CASES) + 5, 40)  # + the Decode and method rows below
        for name, rpc, fields, code, contains in CASES:
            with self.subTest(name):
                request = REQUEST_TYPES[rpc](**fields)
                with self.assertRaises(grpc.RpcError) as raised:
                    getattr(self.stub, rpc)(request, timeout=at.RPC_TIMEOUT_S)
                error = raised.exception
                self.assertEqual(error.code().name, code, f"{name}: {error.details()}")
                for text in contains:
                    self.assertIn(text, error.details(), name)
                self.assertLess(len(error.details()), 1000, name)
                self.assertStillServes()

    def test_tiled_attention_holds_no_score_matrix_and_is_not_charged_for_one(self):
        # 1·8·400·400 = 1.28M scores > --max_attention_elements, but none returned: served.
        x = np.ones((1, 400, 512), np.float32)
        out = self.attend(model="demo-sinusoidal", query=f32_tensor(x)).output
        self.assertEqual(list(out.shape), [1, 400, 512])
        # CoPE's gates need whole rows, not whole matrices: 2·4·384·384 = 1.2M scores, computed
        # a block of rows at a time, served (2.7e9 FLOPs with CoPE's work, under 5e9).
        x = np.random.default_rng(5).standard_normal((2, 384, 256)).astype(np.float32)
        out = self.attend(model="demo-cope", query=f32_tensor(x), causal=True).output
        self.assertEqual(list(out.shape), [2, 384, 256])
        self.assertTrue(np.isfinite(np.frombuffer(out.data, np.float32)).all())

    def decode(self, *messages):
        with self.assertRaises(grpc.RpcError) as raised:
            list(self.stub.Decode(iter(messages), timeout=at.RPC_TIMEOUT_S))
        self.assertStillServes()
        return raised.exception

    def test_decode_misuse(self):
        step = dict(query=f32(1, 1, 256))
        error = self.decode(pb.DecodeRequest(**step))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("model", error.details())
        error = self.decode(pb.DecodeRequest(model="demo-rope", **step),
                            pb.DecodeRequest(model="demo-alibi", **step))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("differs", error.details())
        error = self.decode(pb.DecodeRequest(model="demo-rope", query=f32(2, 1, 256)))
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("query.shape[0]=2", error.details())
        error = self.decode(pb.DecodeRequest(model="demo-learned", query=f32(1, 600, 256)))
        self.assertIn(error.code(), (grpc.StatusCode.OUT_OF_RANGE,
                                     grpc.StatusCode.INVALID_ARGUMENT))
        self.assertIn("512", error.details())

    def test_unknown_method(self):
        call = self.channel.unary_unary("/attnserve.v1.AttentionService/Nope")
        with self.assertRaises(grpc.RpcError) as raised:
            call(b"", timeout=at.RPC_TIMEOUT_S)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        self.assertStillServes()


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
