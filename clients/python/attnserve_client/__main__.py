"""attnserve command line: python3 -m attnserve_client [--address HOST:PORT] [--stubs DIR] COMMAND

Commands:
  list                                   the loaded models, one per line
  describe MODEL                         a model's ModelConfig in text format
  encode [--variant V] --positions N --d_model D [--position_offset P]
                                         a sinusoidal table (Encode on zeros): shape, first row
  attend MODEL --seq N [--batch B] [--causal] [--seed S]
                                         the model's attention on random input: shape, values
  plot SUBCOMMAND [ARGS...]              clients/python/plot_encodings.py (matrix, bias, rope,
                                         attention)

RPC errors end the command with exit status 1 and the server's code and message on stderr.
"""
import argparse
import os
import sys

import numpy as np

from . import _stubs
from ._client import AttnservError, Client

PROG = "attnserve_client"
VARIANTS = {"vaswani": "VASWANI", "tensor2tensor": "TENSOR2TENSOR", "fairseq": "FAIRSEQ"}


def _fmt(values, n=8):
    return np.array2string(np.asarray(values)[:n], precision=5, separator=", ",
                           suppress_small=False, max_line_width=200)


def cmd_list(args, client):
    models = client.list_models()
    header = ("name", "d_model", "heads", "kv_heads", "head_dim", "encoding", "description")
    rows = [header] + [(m["name"], str(m["d_model"]), str(m["num_heads"]),
                        str(m["num_kv_heads"]), str(m["head_dim"]), m["encoding"],
                        m["description"]) for m in models]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0


def cmd_describe(args, client):
    from google.protobuf import text_format
    config = client.get_model(args.model)["config"]
    print(f"# model {config.name}")
    print(text_format.MessageToString(config), end="")
    return 0


def cmd_encode(args, client):
    enc = {"sinusoidal": {"variant": VARIANTS[args.variant]}}
    x = np.zeros((1, args.positions, args.d_model), np.float32)
    out = client.encode(x, encoding=enc, position_offset=args.position_offset)
    print(f"shape: {tuple(out.shape)}")
    print(f"row 0 (position {args.position_offset}): {_fmt(out[0, 0], args.show)}")
    return 0


def cmd_attend(args, client):
    d_model = client.get_model(args.model)["d_model"]
    x = np.random.default_rng(args.seed).standard_normal(
        (args.batch, args.seq, d_model)).astype(np.float32)
    out = client.attend(args.model, x, causal=args.causal)
    print(f"output shape: {tuple(out.shape)}")
    print(f"output[0, 0, :{args.show}]: {_fmt(out[0, 0], args.show)}")
    return 0


def run_plot(rest, address, stubs):
    """plot_encodings.main with the remaining args, --address/--stubs forwarded when given."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if here not in sys.path:
        sys.path.insert(0, here)
    import plot_encodings
    rest = list(rest)
    if rest and not rest[0].startswith("-"):
        forwarded = []
        if address is not None:
            forwarded += ["--address", address]
        if stubs is not None:
            forwarded += ["--stubs", stubs]
        rest = rest[:1] + forwarded + rest[1:]   # after the subcommand; later ones win
    return plot_encodings.main(rest)


def parse_args(argv):
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                     epilog="Run `%s COMMAND --help` for a command's options."
                                            % PROG)
    parser.add_argument("--address", default=None,
                        help="HOST:PORT of the attnserve gRPC endpoint (default 127.0.0.1:50051)")
    parser.add_argument("--stubs", default=None,
                        help="folder of the generated Python stubs, BUILD_DIR/python (default "
                             f"${_stubs.STUBS_ENV} or {_stubs.DEFAULT_STUBS})")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="deadline of each RPC in seconds (default 30)")
    parser.add_argument("--tls_ca", default=None,
                        help="PEM file of the CA of the server's certificate: connect with TLS")
    parser.add_argument("--tls_cert", default=None, help="PEM client certificate (mutual TLS)")
    parser.add_argument("--tls_key", default=None, help="PEM key of --tls_cert")
    parser.add_argument("--token_file", default=None,
                        help="file holding the bearer token the server requires")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("list", help="the loaded models").set_defaults(handler=cmd_list)

    d = sub.add_parser("describe", help="a model's ModelConfig (text format)")
    d.add_argument("model")
    d.set_defaults(handler=cmd_describe)

    e = sub.add_parser("encode", help="a sinusoidal encoding table (Encode on zeros)")
    e.add_argument("--variant", choices=sorted(VARIANTS), default="vaswani")
    e.add_argument("--positions", type=int, required=True, help="number of positions")
    e.add_argument("--d_model", type=int, required=True, help="number of channels")
    e.add_argument("--position_offset", type=int, default=0, help="first position (default 0)")
    e.add_argument("--show", type=int, default=8, help="values of the row to print (default 8)")
    e.set_defaults(handler=cmd_encode)

    a = sub.add_parser("attend", help="a model's attention on random input")
    a.add_argument("model")
    a.add_argument("--seq", type=int, required=True, help="sequence length")
    a.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    a.add_argument("--causal", action="store_true", help="causal mask")
    a.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    a.add_argument("--show", type=int, default=8, help="values to print (default 8)")
    a.set_defaults(handler=cmd_attend)

    p = sub.add_parser("plot", add_help=False,
                       help="render encodings and attention maps (clients/python/"
                            "plot_encodings.py; "
                            "`plot --help` for its options)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args, unknown = parser.parse_known_args(argv)
    if args.command == "plot":
        args.rest = _after_command(argv, "plot")
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _after_command(argv, command):
    """The arguments after `command`, skipping the global options (and their values) before it."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == command:
            return list(argv[i + 1:])
        if token in ("--address", "--stubs", "--timeout"):
            i += 1
        i += 1
    return []


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "plot":
        return run_plot(args.rest, args.address, args.stubs)
    address = args.address or "127.0.0.1:50051"
    try:
        token = None
        if args.token_file:
            with open(args.token_file) as f:
                token = f.read().strip()
        with Client(address, stubs=args.stubs, timeout=args.timeout, tls_ca=args.tls_ca,
                    tls_cert=args.tls_cert, tls_key=args.tls_key, token=token) as client:
            return args.handler(args, client)
    except AttnservError as error:
        print(f"{PROG}: error: {args.command} against {address} failed: {error.code}: "
              f"{error.details}", file=sys.stderr)
        return 1
    except _stubs.StubsNotFound as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
