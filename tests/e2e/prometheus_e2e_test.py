#!/usr/bin/python3
"""A real Prometheus (Debian's, on loopback) scrapes a real attnserve with the repository's own
configuration (deploy/prometheus/prometheus.yml, target rewritten to the test server) and rules
(deploy/prometheus/rules.yml). After traffic, the test reads through Prometheus's HTTP API: the
request counter per code, a latency quantile, the recording rules' series, and that no alert
fires on a healthy server.

    /usr/bin/python3 tests/e2e/prometheus_e2e_test.py --server build/server/attnserve --stubs build/python
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import numpy as np
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attnserve_testing as at  # noqa: E402

UNITTEST_ARGV = at.setup_from_argv()

from attnserve_testing import grpc, pb, ServerTestCase, f32_tensor  # noqa: E402

DEPLOY = at.REPO_ROOT / "deploy" / "prometheus"
DASHBOARD = at.REPO_ROOT / "deploy" / "grafana" / "dashboards" / "attnserve.json"
# Dashboard queries that stay empty on a server that has refused nothing.
MAY_BE_EMPTY = ("attnserve_rejected_requests_total",)
PROMETHEUS = shutil.which("prometheus")
QUERY_DEADLINE_S = 60.0
ATTEND = ('grpc_server_handled_total{job="attnserve",grpc_service="attnserve.v1.AttentionService",'
          'grpc_method="Attend",grpc_code="%s"}')


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipIf(PROMETHEUS is None, "prometheus is not installed (scripts/install_deps.sh test)")
class RealPrometheusTest(ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp(prefix="attnserve-prometheus-")
        # The repository's configuration, scraping this test's server every second.
        config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        config["rule_files"] = [str(DEPLOY / f) for f in config["rule_files"]]
        metrics = urllib.parse.urlparse(cls.server.metrics_url)
        (job,) = config["scrape_configs"]
        job["static_configs"] = [{"targets": [metrics.netloc]}]
        job["metrics_path"] = metrics.path or "/metrics"
        config_path = os.path.join(cls.tmp, "prometheus.yml")
        with open(config_path, "w") as f:
            yaml.safe_dump(config, f)
        cls.api = f"http://127.0.0.1:{free_port()}"
        cls.prometheus_log = open(os.path.join(cls.tmp, "log"), "w")
        cls.prometheus = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config_path}",
             f"--storage.tsdb.path={os.path.join(cls.tmp, 'data')}",
             f"--web.listen-address={cls.api[len('http://'):]}",
             "--web.console.libraries=/usr/share/prometheus/console_libraries",
             "--web.console.templates=/etc/prometheus/consoles"],
            stdout=subprocess.DEVNULL, stderr=cls.prometheus_log)

    @classmethod
    def tearDownClass(cls):
        cls.prometheus.terminate()
        cls.prometheus.wait(timeout=10)
        cls.prometheus_log.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        super().tearDownClass()

    def query(self, promql):
        url = f"{self.api}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        self.assertEqual(body["status"], "success", body)
        return body["data"]["result"]

    def wait_for(self, promql, accept):
        """Polls `promql` until accept(result) holds; returns the result."""
        deadline = time.monotonic() + QUERY_DEADLINE_S
        result = None
        while time.monotonic() < deadline:
            try:
                result = self.query(promql)
                if accept(result):
                    return result
            except OSError:
                pass  # Prometheus still starting
            time.sleep(0.5)
        with open(os.path.join(self.tmp, "log")) as f:
            log = f.read()[-3000:]
        self.fail(f"{promql}: last result {result}; prometheus log tail:\n{log}")

    def test_prometheus_sees_the_traffic_and_the_rules_evaluate(self):
        x = np.ones((1, 16, 512), np.float32)
        for _ in range(5):
            self.attend(model="demo-sinusoidal", query=f32_tensor(x))
        for _ in range(2):
            with self.assertRaises(grpc.RpcError):
                self.attend(model="no-such-model", query=f32_tensor(x))
        # The KServe v2 HTTP door too (its panels): a readiness check and an inference.
        urllib.request.urlopen(f"{self.server.http_url}/v2/health/ready", timeout=10).read()
        # (On another model, so that demo-sinusoidal's counts below are the gRPC calls'.)
        body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1, 256],
                                       "data": [0.5] * 256}]}).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{self.server.http_url}/v2/models/demo-rope/infer", data=body), timeout=10).read()

        # The scrape target is up and the request counter carries each outcome.
        self.wait_for('up{job="attnserve"} == 1', lambda r: len(r) == 1)
        ok = self.wait_for(ATTEND % "OK", lambda r: r and float(r[0]["value"][1]) == 5)
        self.assertEqual(ok[0]["metric"]["grpc_type"], "unary")
        self.wait_for(ATTEND % "NOT_FOUND", lambda r: r and float(r[0]["value"][1]) == 2)

        # Computations per model, each in a batch (of one: the calls came one at a time); a
        # request for a model the server does not have is refused before it queues, and its name
        # is no label.
        self.wait_for('attnserve_compute_seconds_count{rpc="Attend",model="demo-sinusoidal"}',
                      lambda r: r and float(r[0]["value"][1]) == 5)
        self.wait_for('attnserve_batch_requests_sum{rpc="Attend",model="demo-sinusoidal"}',
                      lambda r: r and float(r[0]["value"][1]) == 5)
        self.assertEqual(self.query('attnserve_compute_seconds_count{model="unknown"}'), [])
        self.assertEqual(self.query('{model="no-such-model"}'), [])

        # A latency quantile from the histogram: positive and within the histogram's range.
        p90 = self.wait_for(
            'histogram_quantile(0.9, sum by (le) (grpc_server_handling_seconds_bucket'
            '{grpc_method="Attend"}))', lambda r: r and r[0]["value"][1] != "NaN")
        self.assertGreater(float(p90[0]["value"][1]), 0.0)
        self.assertLess(float(p90[0]["value"][1]), 10.0)

        # The recording rules produce their series from the real exposition.
        for series in ("attnserve:grpc_requests:rate1m", "attnserve:compute_queue:saturation",
                       "attnserve:tokens:rate1m", "attnserve:grpc_server_errors:ratio_rate5m"):
            self.wait_for(series, lambda r: len(r) > 0)
        saturation = self.query("attnserve:compute_queue:saturation")
        self.assertEqual(float(saturation[0]["value"][1]), 0.0)  # idle: nothing waits
        # Client mistakes (NOT_FOUND) are not server errors.
        errors = self.query("attnserve:grpc_server_errors:ratio_rate5m")
        self.assertEqual(float(errors[0]["value"][1]), 0.0)

        # The rules are loaded and none fires on a healthy server.
        with urllib.request.urlopen(f"{self.api}/api/v1/rules", timeout=5) as response:
            groups = json.load(response)["data"]["groups"]
        alerts = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
        self.assertEqual({a["name"] for a in alerts},
                         {"AttnserveDown", "AttnserveHighErrorRatio", "AttnserveHighLatencyP99",
                          "AttnserveQueueSaturated", "AttnserveRejectingRequests",
                          "AttnserveModelStale", "AttnserveModelReloadFailed"})
        self.assertEqual(self.query("ALERTS"), [])

        # Every query of the Grafana dashboard is valid PromQL and, after this traffic, has data.
        dashboard = json.loads(DASHBOARD.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"]
                with self.subTest(panel=panel["title"], expr=expr):
                    if any(name in expr for name in MAY_BE_EMPTY):
                        self.query(expr)  # asserts status success
                    else:
                        self.wait_for(expr, lambda r: len(r) > 0)


if __name__ == "__main__":
    at.run_tests(UNITTEST_ARGV)
