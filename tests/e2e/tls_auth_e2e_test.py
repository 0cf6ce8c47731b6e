#!/usr/bin/python3
"""End-to-end tests of who may call the server: TLS, mutual TLS and bearer tokens, with
certificates made by openssl at test time. The Python client and the load tool speak TLS and send
tokens; the health service stays open; reflection needs the token like every other call; the
metrics endpoint defaults to loopback then; bad settings stop the server with a message naming
the flag; certificates, key and tokens rotate without a restart (polled, or on SIGHUP), and a
rotation that does not check out keeps the previous ones, counted.

    /usr/bin/python3 tests/e2e/tls_auth_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import grpc, pb, ServerProcess, f32_tensor  # noqa: E402

sys.path.insert(0, str(at.REPO_ROOT / "clients" / "python"))
from attnserve_client import AttnservError, Client  # noqa: E402

# The stubs folder the harness loaded (…/python of the build tree); the load tool beside the server.
STUBS_DIR = str(pathlib.Path(at.pb.__file__).parents[2])
LOADGEN = pathlib.Path(at.SERVER_PATH).parents[1] / "bench" / "attnserve_loadgen"
CERTS = None  # folder with ca.pem, server.pem/.key, client.pem/.key, rogue-client.pem/.key
TOKEN = "s3cret-token-for-tests"


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=CERTS)


def make_certificates():
    """A CA; a server certificate for 127.0.0.1/localhost and a client certificate it signs; a
    client certificate signed by another CA."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "rogue-ca"):
        openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN=attnserve test {ca}")
    (CERTS / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                      "extendedKeyUsage=serverAuth\n")
    (CERTS / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("rogue-client", "rogue-ca", "client.ext"),
                          ("rogue-server", "rogue-ca", "server.ext")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN=attnserve test {name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", ext)
    (CERTS / "token").write_text(TOKEN + "\n")
    (CERTS / "wrong-token").write_text("not-the-token\n")
    (CERTS / "blank-token").write_text("  \n")


def setUpModule():
    global CERTS
    CERTS = pathlib.Path(tempfile.mkdtemp(prefix="attnserve-tls-"))
    make_certificates()


def tearDownModule():
    shutil.rmtree(CERTS, ignore_errors=True)


def cert(name):
    return str(CERTS / name)


class SecuredServerTest(unittest.TestCase):
    """One server per class, started with SERVER_ARGS; readiness is taken from its log."""
    SERVER_ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.server = ServerProcess(at.SERVER_PATH, cls.SERVER_ARGS).start()

    @classmethod
    def tearDownClass(cls):
        rc = cls.server.stop()
        if rc != 0:
            raise AssertionError(f"exit code {rc} after SIGTERM; log:\n{cls.server.log()}")

    def client(self, **kwargs):
        return Client(self.server.grpc_address, stubs=STUBS_DIR, timeout=10, **kwargs)

    def assertRefused(self, code, **kwargs):
        with self.client(**kwargs) as c:
            with self.assertRaises(AttnservError) as raised:
                c.list_models()
        self.assertEqual(raised.exception.code, code, raised.exception)
        return raised.exception

    def loadgen(self, *args):
        return subprocess.run([str(LOADGEN), f"--target={self.server.grpc_address}",
                               "--model=demo-rope", "--seq=4", "--requests=3", *args],
                              capture_output=True, text=True, timeout=60)


class TlsTest(SecuredServerTest):
    SERVER_ARGS = ("--tls_cert_file=@server.pem", "--tls_key_file=@server.key")

    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = tuple(a.replace("@", str(CERTS) + "/") for a in cls.SERVER_ARGS)
        super().setUpClass()

    def test_tls_client_is_served(self):
        with self.client(tls_ca=cert("ca.pem")) as c:
            self.assertIn("demo-rope", [m["name"] for m in c.list_models()])
            out = c.attend("demo-rope", np.ones((1, 3, 256)), causal=True)
            self.assertEqual(out.shape, (1, 3, 256))

    def test_plaintext_client_cannot_talk_to_a_tls_port(self):
        self.assertRefused("UNAVAILABLE")

    # The KServe v2 HTTP door speaks HTTPS with the same certificate.
    def curl_tls(self):
        return ["--cacert", cert("ca.pem")]

    def https(self, path, *args):
        url = self.server.http_url + path
        done = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "20",
                               *args, url], capture_output=True, text=True, timeout=60)
        body, _, status = done.stdout.rpartition("\n")
        return done.returncode, int(status or 0), body

    def test_http_door_speaks_https(self):
        self.assertTrue(self.server.http_url.startswith("https://"), self.server.http_url)
        _, status, body = self.https("/v2/health/ready", *self.curl_tls())
        self.assertEqual((status, body), (200, '{"ready":true}'))
        x = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 256],
                                    "data": [0.5] * 256}]})
        _, status, body = self.https("/v2/models/demo-rope/infer", *self.curl_tls(), "-d", x)
        self.assertEqual(status, 200, body)
        self.assertEqual(json.loads(body)["outputs"][0]["shape"], [1, 1, 256])
        plain = self.server.http_url.replace("https://", "http://")
        done = subprocess.run(["curl", "-s", "--max-time", "10", plain + "/v2/health/ready"],
                              capture_output=True, text=True, timeout=60)
        self.assertNotIn('"ready"', done.stdout)
        rc, _, _ = self.https("/v2/health/ready", "--cacert", cert("rogue-ca.pem"))
        self.assertNotEqual(rc, 0)  # a certificate from another CA: the client refuses it

    def test_a_server_certificate_from_another_ca_is_rejected_by_the_client(self):
        self.assertRefused("UNAVAILABLE", tls_ca=cert("rogue-ca.pem"))

    @unittest.skipUnless(LOADGEN.exists(), "attnserve_loadgen not built")
    def test_load_tool_speaks_tls(self):
        result = self.loadgen(f"--tls_ca_file={cert('ca.pem')}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"requests":3', result.stdout)
        self.assertIn('"errors":{}', result.stdout)


class MutualTlsTest(TlsTest):
    SERVER_ARGS = ("--tls_cert_file=@server.pem", "--tls_key_file=@server.key",
                   "--tls_client_ca_file=@ca.pem")

    def client(self, **kwargs):
        if kwargs.get("tls_ca") and "tls_cert" not in kwargs:
            kwargs.update(tls_cert=cert("client.pem"), tls_key=cert("client.key"))
        return super().client(**kwargs)

    def curl_tls(self):
        return ["--cacert", cert("ca.pem"), "--cert", cert("client.pem"), "--key", cert("client.key")]

    def test_https_without_a_client_certificate_is_refused(self):
        rc, status, _ = self.https("/v2/health/ready", "--cacert", cert("ca.pem"))
        self.assertNotEqual((rc, status), (0, 200))
        rc, status, _ = self.https("/v2/health/ready", "--cacert", cert("ca.pem"), "--cert",
                                   cert("rogue-client.pem"), "--key", cert("rogue-client.key"))
        self.assertNotEqual((rc, status), (0, 200))

    def test_client_without_a_certificate_is_refused(self):
        with Client(self.server.grpc_address, stubs=STUBS_DIR, timeout=10,
                    tls_ca=cert("ca.pem")) as c:
            with self.assertRaises(AttnservError) as raised:
                c.list_models()
        self.assertEqual(raised.exception.code, "UNAVAILABLE")

    def test_client_certificate_from_another_ca_is_refused(self):
        self.assertRefused("UNAVAILABLE", tls_ca=cert("ca.pem"), tls_cert=cert("rogue-client.pem"),
                           tls_key=cert("rogue-client.key"))

    @unittest.skipUnless(LOADGEN.exists(), "attnserve_loadgen not built")
    def test_load_tool_speaks_tls(self):
        result = self.loadgen(f"--tls_ca_file={cert('ca.pem')}",
                              f"--tls_cert_file={cert('client.pem')}",
                              f"--tls_key_file={cert('client.key')}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"errors":{}', result.stdout)


def probe(*args):
    return subprocess.run([str(at.SERVER_PATH), "--health_probe",
                           "--health_probe_timeout_seconds=5", *args],
                          capture_output=True, text=True, timeout=30)


class TlsProbeTest(SecuredServerTest):
    """--health_probe with the server's TLS flags speaks TLS to the main port."""
    SERVER_ARGS = TlsTest.SERVER_ARGS

    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = tuple(a.replace("@", str(CERTS) + "/") for a in cls.SERVER_ARGS)
        super().setUpClass()

    def test_probe_speaks_tls_with_the_servers_flags(self):
        result = probe(f"--grpc_address={self.server.grpc_address}",
                       f"--tls_cert_file={cert('server.pem')}",
                       f"--tls_key_file={cert('server.key')}")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("SERVING", result.stdout)
        plaintext = probe(f"--grpc_address={self.server.grpc_address}")
        self.assertEqual(plaintext.returncode, 1, plaintext.stdout)


class HealthPortTest(SecuredServerTest):
    """Mutual TLS and a token on the main port; --health_address serves grpc.health.v1 alone, in
    plaintext, for probes that cannot present a client certificate."""
    SERVER_ARGS = ("--tls_cert_file=@server.pem", "--tls_key_file=@server.key",
                   "--tls_client_ca_file=@ca.pem", "--auth_token_file=@token",
                   "--health_address=127.0.0.1:0")

    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = tuple(a.replace("@", str(CERTS) + "/") for a in cls.SERVER_ARGS)
        super().setUpClass()
        found = re.search(r"health \(grpc.health.v1 only, plaintext\) listening on (\S+)",
                          cls.server.log())
        cls.health_address = found.group(1)

    def test_health_port_answers_in_plaintext_and_serves_nothing_else(self):
        channel = grpc.insecure_channel(self.health_address)
        try:
            health = at.health_pb2_grpc.HealthStub(channel)
            for service in ("", "attnserve.v1.AttentionService"):
                reply = health.Check(at.health_pb2.HealthCheckRequest(service=service), timeout=10)
                self.assertEqual(reply.status, at.health_pb2.HealthCheckResponse.SERVING)
            with self.assertRaises(grpc.RpcError) as raised:
                at.pb_grpc.AttentionServiceStub(channel).ListModels(pb.ListModelsRequest(),
                                                                    timeout=10)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            reflection = at.reflection_pb2_grpc.ServerReflectionStub(channel)
            with self.assertRaises(grpc.RpcError) as raised:
                list(reflection.ServerReflectionInfo(
                    iter([at.reflection_pb2.ServerReflectionRequest(list_services="")]),
                    timeout=10))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        finally:
            channel.close()

    def test_probe_uses_the_health_port(self):
        result = probe(f"--health_address={self.health_address}",
                       f"--grpc_address={self.server.grpc_address}")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(f"{self.health_address}: SERVING", result.stdout)

    def test_the_main_port_still_needs_certificate_and_token(self):
        self.assertRefused("UNAVAILABLE", tls_ca=cert("ca.pem"))  # no client certificate
        with self.client(tls_ca=cert("ca.pem"), tls_cert=cert("client.pem"),
                         tls_key=cert("client.key"), token=TOKEN) as c:
            self.assertIn("demo-rope", [m["name"] for m in c.list_models()])


class TokenTest(SecuredServerTest):
    @classmethod
    def setUpClass(cls):
        cls.SERVER_ARGS = (f"--auth_token_file={cert('token')}",)
        super().setUpClass()

    def test_calls_need_the_token(self):
        missing = self.assertRefused("UNAUTHENTICATED")
        self.assertIn("authorization", str(missing))
        wrong = self.assertRefused("UNAUTHENTICATED", token="not-the-token")
        self.assertNotIn("not-the-token", str(wrong))  # never echoed
        self.assertRefused("UNAUTHENTICATED", token=TOKEN + "x")
        self.assertRefused("UNAUTHENTICATED", token=TOKEN[:-1])
        with self.client(token=TOKEN) as c:
            self.assertIn("demo-rope", [m["name"] for m in c.list_models()])

    def test_decode_streams_need_the_token(self):
        channel = grpc.insecure_channel(self.server.grpc_address)
        try:
            stub = at.pb_grpc.AttentionServiceStub(channel)
            step = pb.DecodeRequest(model="demo-rope", query=f32_tensor(np.ones((1, 1, 256))))
            with self.assertRaises(grpc.RpcError) as raised:
                list(stub.Decode(iter([step]), timeout=10))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            replies = list(stub.Decode(iter([step]), timeout=10,
                                       metadata=(("authorization", f"Bearer {TOKEN}"),)))
            self.assertEqual(len(replies), 1)
        finally:
            channel.close()

    def test_health_is_open_and_reflection_needs_the_token(self):
        channel = grpc.insecure_channel(self.server.grpc_address)
        try:
            health = at.health_pb2_grpc.HealthStub(channel)
            self.assertEqual(health.Check(at.health_pb2.HealthCheckRequest(), timeout=10).status,
                             at.health_pb2.HealthCheckResponse.SERVING)
            reflection = at.reflection_pb2_grpc.ServerReflectionStub(channel)
            ask = at.reflection_pb2.ServerReflectionRequest(list_services="")
            with self.assertRaises(grpc.RpcError) as raised:
                list(reflection.ServerReflectionInfo(iter([ask]), timeout=10))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
            replies = list(reflection.ServerReflectionInfo(
                iter([ask]), timeout=10, metadata=(("authorization", f"Bearer {TOKEN}"),)))
            services = [s.name for s in replies[0].list_services_response.service]
            self.assertIn("attnserve.v1.AttentionService", services)
        finally:
            channel.close()

    def test_refusals_are_counted(self):
        self.assertRefused("UNAUTHENTICATED")
        import urllib.request
        with urllib.request.urlopen(self.server.metrics_url, timeout=10) as response:
            samples = at.parse_exposition(response.read().decode())
        refused = [v for n, labels, v in samples
                   if n == "attnserve_rejected_requests_total" and labels["reason"] == "unauthenticated"]
        self.assertTrue(refused and refused[0] >= 1, refused)

    @unittest.skipUnless(LOADGEN.exists(), "attnserve_loadgen not built")
    def test_load_tool_sends_the_token(self):
        result = self.loadgen(f"--token_file={cert('token')}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('"errors":{}', result.stdout)
        result = self.loadgen(f"--token_file={cert('wrong-token')}")
        self.assertNotEqual(result.returncode, 0)  # its first call (GetModel) is refused


def eventually(check, timeout=15.0):
    """Calls `check` until it returns without an AssertionError or a refused call (its last error
    past `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, AttnservError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class RotationTest(unittest.TestCase):
    """Secrets replaced under a running server (polled every 0.2 s): new connections and calls use
    the new ones; files that do not check out are refused, counted, and the previous stay."""

    def setUp(self):
        self.live = pathlib.Path(tempfile.mkdtemp(prefix="attnserve-live-"))
        self.put("server.pem", "server.pem")
        self.put("server.key", "server.key")
        (self.live / "tokens").write_text("# rotation in progress\nold-token\n\nnew-token\n")
        self.server = ServerProcess(at.SERVER_PATH, (
            f"--tls_cert_file={self.live / 'server.pem'}",
            f"--tls_key_file={self.live / 'server.key'}",
            f"--auth_token_file={self.live / 'tokens'}",
            *self.POLL)).start()

    POLL = ("--secrets_poll_seconds=0.2",)

    def tearDown(self):
        self.server.stop()
        shutil.rmtree(self.live, ignore_errors=True)

    def put(self, live_name, cert_name):
        self.replace(live_name, pathlib.Path(cert(cert_name)).read_text())

    def replace(self, live_name, text):
        # Written beside and renamed, as Kubernetes and cert-manager replace files: a poll never
        # sees a half-written file (one that did would be refused and counted once more).
        staged = self.live / (live_name + ".new")
        staged.write_text(text)
        os.replace(staged, self.live / live_name)

    def served(self, ca, token):
        with Client(self.server.grpc_address, stubs=STUBS_DIR, timeout=10, tls_ca=cert(ca),
                    token=token) as c:
            return [m["name"] for m in c.list_models()]

    def refused(self, ca, token):
        with self.assertRaises(AttnservError) as raised:
            self.served(ca, token)
        return raised.exception.code

    def reloads(self, secret, result):
        return at.metric_value(self.server.metrics_url, "attnserve_secrets_reloads_total",
                               {"secret": secret, "result": result})

    def test_tokens_rotate_and_a_bad_file_keeps_them(self):
        self.assertIn("demo-rope", self.served("ca.pem", "old-token"))
        self.assertIn("demo-rope", self.served("ca.pem", "new-token"))
        self.replace("tokens", "new-token\n")
        eventually(lambda: self.assertEqual(self.refused("ca.pem", "old-token"), "UNAUTHENTICATED"))
        self.assertIn("demo-rope", self.served("ca.pem", "new-token"))
        self.assertEqual(self.reloads("tokens", "ok"), 1)

        self.replace("tokens", "# emptied by mistake\n")
        eventually(lambda: self.assertEqual(self.reloads("tokens", "failed"), 1))
        self.assertIn("demo-rope", self.served("ca.pem", "new-token"))
        time.sleep(0.5)  # polls of the same refused content are not counted again
        self.assertEqual(self.reloads("tokens", "failed"), 1)
        self.assertIn("reloading the tokens failed", self.server.log())

    def test_certificate_rotates_and_a_mismatched_key_keeps_it(self):
        self.assertIn("demo-rope", self.served("ca.pem", "new-token"))
        # A key that belongs to another certificate: refused, the old pair stays.
        self.put("server.key", "rogue-server.key")
        eventually(lambda: self.assertEqual(self.reloads("tls", "failed"), 1))
        self.assertIn("does not belong to the certificate", self.server.log())
        self.assertIn("demo-rope", self.served("ca.pem", "new-token"))
        # The matching certificate arrives: new connections get the rogue CA's certificate.
        self.put("server.pem", "rogue-server.pem")
        eventually(lambda: self.assertEqual(self.refused("ca.pem", "new-token"), "UNAVAILABLE"))
        self.assertIn("demo-rope", self.served("rogue-ca.pem", "new-token"))
        self.assertEqual(self.reloads("tls", "ok"), 1)


class ClientCaRotationTest(unittest.TestCase):
    """Mutual TLS: the client CA rotates too; new connections then need a certificate it signed."""

    def setUp(self):
        self.live = pathlib.Path(tempfile.mkdtemp(prefix="attnserve-live-ca-"))
        shutil.copy(cert("ca.pem"), self.live / "client-ca.pem")
        self.server = ServerProcess(at.SERVER_PATH, (
            f"--tls_cert_file={cert('server.pem')}", f"--tls_key_file={cert('server.key')}",
            f"--tls_client_ca_file={self.live / 'client-ca.pem'}",
            "--secrets_poll_seconds=0.2")).start()

    def tearDown(self):
        self.server.stop()
        shutil.rmtree(self.live, ignore_errors=True)

    def served(self, name):
        with Client(self.server.grpc_address, stubs=STUBS_DIR, timeout=10, tls_ca=cert("ca.pem"),
                    tls_cert=cert(f"{name}.pem"), tls_key=cert(f"{name}.key")) as c:
            return [m["name"] for m in c.list_models()]

    def test_client_ca_rotates(self):
        self.assertIn("demo-rope", self.served("client"))
        with self.assertRaises(AttnservError):
            self.served("rogue-client")
        staged = self.live / "client-ca.pem.new"
        shutil.copy(cert("rogue-ca.pem"), staged)
        os.replace(staged, self.live / "client-ca.pem")
        eventually(lambda: self.assertIn("demo-rope", self.served("rogue-client")))
        with self.assertRaises(AttnservError):
            self.served("client")
        self.assertEqual(at.metric_value(self.server.metrics_url, "attnserve_secrets_reloads_total",
                                         {"secret": "tls", "result": "ok"}), 1)


class SighupRotationTest(RotationTest):
    """With polling off, the files are read again on SIGHUP only."""
    POLL = ("--secrets_poll_seconds=0",)

    def test_tokens_rotate_and_a_bad_file_keeps_them(self):
        self.replace("tokens", "new-token\n")
        time.sleep(0.5)
        self.assertIn("demo-rope", self.served("ca.pem", "old-token"))  # not read yet
        self.server.proc.send_signal(signal.SIGHUP)
        eventually(lambda: self.assertEqual(self.refused("ca.pem", "old-token"), "UNAUTHENTICATED"))
        self.assertIn("demo-rope", self.served("ca.pem", "new-token"))

    def test_certificate_rotates_and_a_mismatched_key_keeps_it(self):
        self.put("server.pem", "rogue-server.pem")
        self.put("server.key", "rogue-server.key")
        self.server.proc.send_signal(signal.SIGHUP)
        eventually(lambda: self.assertIn("demo-rope", self.served("rogue-ca.pem", "new-token")))


class SettingsTest(unittest.TestCase):

    def run_server(self, *args):
        return subprocess.run([str(at.SERVER_PATH), "--grpc_address=127.0.0.1:0",
                               "--http_address=127.0.0.1:0", *args],
                              capture_output=True, text=True, timeout=30)

    def test_bad_settings_stop_the_server_naming_the_flag(self):
        cases = [
            ((f"--tls_cert_file={cert('server.pem')}",), "--tls_cert_file and --tls_key_file"),
            ((f"--tls_client_ca_file={cert('ca.pem')}",), "--tls_client_ca_file needs"),
            ((f"--tls_cert_file={cert('nope.pem')}", f"--tls_key_file={cert('server.key')}"),
             "--tls_cert_file="),
            ((f"--auth_token_file={cert('blank-token')}",), "--auth_token_file="),
            ((f"--tls_cert_file={cert('server.pem')}", f"--tls_key_file={cert('client.key')}"),
             "the key does not belong to the certificate of --tls_cert_file="),
            ((f"--tls_cert_file={cert('server.key')}", f"--tls_key_file={cert('server.key')}"),
             "holds no PEM certificate"),
            (("--secrets_poll_seconds=0.01",), "--secrets_poll_seconds=0.01 must be 0"),
            # The limits this issue added, beside the secrets.
            (("--max_request_memory_bytes=1000000",),
             "must hold at least twice --max_message_bytes=67108864"),
            (("--request_read_timeout_seconds=-1",),
             "--request_read_timeout_seconds=-1 must be in [0, 604800]"),
            (("--max_concurrent_streams=0",), "--max_concurrent_streams=0 >= 1"),
            (("--keepalive_time_seconds=0",), "--keepalive_time_seconds=0 must be in (0, 1e6]"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                result = self.run_server("--metrics_address=127.0.0.1:0", *args)
                self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
                self.assertIn(message, result.stdout + result.stderr)

    def test_metrics_default_to_loopback_when_calls_are_restricted(self):
        server = ServerProcess(at.SERVER_PATH, (f"--auth_token_file={cert('token')}",))
        server.args.remove("--metrics_address=127.0.0.1:0")
        try:
            server.start()
            self.assertTrue(server.metrics_url.startswith("http://127.0.0.1:9464"),
                            server.metrics_url)
        except RuntimeError as e:
            # Another process holds 9464: the refusal names the address chosen.
            self.assertIn("cannot serve metrics on 127.0.0.1:9464", str(e))
        finally:
            server.kill()


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
