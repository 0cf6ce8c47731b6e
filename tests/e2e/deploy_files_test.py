#!/usr/bin/python3
"""Consistency of deploy/: the compose file, Grafana provisioning, the dashboard and the
Prometheus configuration agree on service names, ports, paths and data source ids, so that
`docker compose -f deploy/docker-compose.yml up` comes up wired together. (No container runtime
with registry access here: this checks the files, the Docker smoke test checks the image, and
tests/e2e/prometheus_e2e_test.py runs the Prometheus configuration and the dashboard's queries.)

    /usr/bin/python3 tests/e2e/deploy_files_test.py
"""
import json
import pathlib
import re
import unittest

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def load_yaml(path):
    return yaml.safe_load(path.read_text())


def container_mounts(service):
    """{container path: host path (resolved against deploy/)} of a compose service's binds."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container = volume.split(":")[:2]
        mounts[container] = (DEPLOY / host).resolve()
    return mounts


def host_path(service, container_path):
    """The host file behind a path inside the container, through the service's bind mounts."""
    for mount, host in container_mounts(service).items():
        if container_path == mount or container_path.startswith(mount + "/"):
            return host / container_path[len(mount):].lstrip("/")
    raise AssertionError(f"{container_path} is not under any bind mount of the service")


class ComposeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.compose = load_yaml(DEPLOY / "docker-compose.yml")
        cls.services = cls.compose["services"]

    def test_services_and_image_build(self):
        self.assertEqual(set(self.services), {"attnserve", "prometheus", "grafana"})
        build = self.services["attnserve"]["build"]
        self.assertTrue((DEPLOY / build["context"] / build["dockerfile"]).is_file())

    def test_every_bind_mount_exists(self):
        for name, service in self.services.items():
            for container, host in container_mounts(service).items():
                with self.subTest(service=name, mount=container):
                    self.assertTrue(host.exists(), host)

    def test_prometheus_scrapes_the_attnserve_service_on_its_metrics_port(self):
        prometheus = self.services["prometheus"]
        config_flag = next(a for a in prometheus["command"] if a.startswith("--config.file="))
        config_path = host_path(prometheus, config_flag.split("=", 1)[1])
        config = load_yaml(config_path)
        for rule_file in config["rule_files"]:
            self.assertTrue((config_path.parent / rule_file).is_file(), rule_file)
        (job,) = config["scrape_configs"]
        (target,) = job["static_configs"][0]["targets"]
        host, port = target.split(":")
        self.assertIn(host, self.services)
        # The image's default metrics address (Dockerfile ENV), published by the service.
        dockerfile = (ROOT / "Dockerfile").read_text()
        default = re.search(r"FLAGS_metrics_address=[0-9.]+:(\d+)", dockerfile).group(1)
        self.assertEqual(port, default)
        self.assertIn(f"{port}:{port}", self.services["attnserve"]["ports"])

    def test_grafana_provisions_the_prometheus_data_source_and_the_dashboard(self):
        grafana = self.services["grafana"]
        provisioning = host_path(grafana, "/etc/grafana/provisioning")
        (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
        url = re.match(r"http://([a-z0-9_-]+):(\d+)$", source["url"])
        self.assertIsNotNone(url, source["url"])
        self.assertIn(url.group(1), self.services)
        self.assertIn(f"{url.group(2)}:{url.group(2)}", self.services[url.group(1)]["ports"])

        (provider,) = load_yaml(provisioning / "dashboards" / "attnserve.yml")["providers"]
        dashboards = host_path(grafana, provider["options"]["path"])
        home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        self.assertTrue(host_path(grafana, home).is_file(), home)

        dashboard = json.loads((dashboards / "attnserve.json").read_text())
        ids = [panel["id"] for panel in dashboard["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids must be unique")
        for panel in dashboard["panels"]:
            self.assertTrue(panel["targets"], panel["title"])
            for target in panel["targets"]:
                self.assertEqual(target["datasource"]["uid"], source["uid"], panel["title"])


if __name__ == "__main__":
    unittest.main()
