#!/usr/bin/python3
"""deploy/k8s rendered by `kubectl kustomize` for every overlay and validated offline:

* every field of every object against the Kubernetes API models of python3-kubernetes (strictly:
  an unknown or misspelt field, a wrong type or a missing required field fails). Those models
  are Kubernetes 1.22's; the newer fields used here are added from the API reference: native
  gRPC probes (Probe.grpc, 1.24+), autoscaling/v2 (1.23+; the same schema as v2beta2, whose
  models check it), and the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1);
* the base with each component of deploy/k8s/components (the optional parts: the Prometheus
  Operator's ServiceMonitor, autoscaling on requests in flight) as an overlay would add it;
* that the objects fit together: selectors match the pod labels, Services and the ServiceMonitor
  name ports the pod has, the HPA needs a custom metric only where a component adds it, the
  NetworkPolicy opens the pod's ports and the metrics port only to a namespace, probes hit the gRPC port (or, with TLS, the plaintext health port),
  TLS files come from a mounted Secret, the HPA and PDB target the Deployment, the
  grace period covers the preStop pause plus the server's drain, the container runs non-root on
  a read-only root filesystem.

    /usr/bin/python3 tests/e2e/k8s_manifests_test.py
"""
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml
from kubernetes.client import Configuration, models

ROOT = pathlib.Path(__file__).resolve().parents[2]
OVERLAYS = sorted((ROOT / "deploy" / "k8s" / "overlays").iterdir())
COMPONENTS = sorted((ROOT / "deploy" / "k8s" / "components").iterdir())
KUBECTL = shutil.which("kubectl")

# (apiVersion, kind) → model class name of python3-kubernetes 22 (API 1.22).
MODELS = {
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Namespace"): "V1Namespace",
    ("v1", "Service"): "V1Service",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("policy/v1", "PodDisruptionBudget"): "V1PodDisruptionBudget",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "V2beta2HorizontalPodAutoscaler",
    ("networking.k8s.io/v1", "NetworkPolicy"): "V1NetworkPolicy",
}
# Fields newer than the models, as {model: {json field: type}} (Kubernetes API reference).
EXTRA_FIELDS = {
    "V1Probe": {"grpc": "GRPCAction"},
}
# Types the models lack, in the models' notation.
EXTRA_TYPES = {
    "GRPCAction": {"port": ("int", True), "service": ("str", False)},
    # monitoring.coreos.com/v1 ServiceMonitor, the fields used here.
    "ServiceMonitor": {"apiVersion": ("str", True), "kind": ("str", True),
                       "metadata": ("V1ObjectMeta", True), "spec": ("ServiceMonitorSpec", True)},
    "ServiceMonitorSpec": {"selector": ("V1LabelSelector", True),
                           "endpoints": ("list[ServiceMonitorEndpoint]", True),
                           "namespaceSelector": ("dict(str, object)", False),
                           "jobLabel": ("str", False)},
    "ServiceMonitorEndpoint": {"port": ("str", False), "targetPort": ("object", False),
                               "path": ("str", False), "interval": ("str", False),
                               "scrapeTimeout": ("str", False), "scheme": ("str", False)},
    # monitoring.coreos.com/v1 PrometheusRule, the fields used here.
    "PrometheusRule": {"apiVersion": ("str", True), "kind": ("str", True),
                       "metadata": ("V1ObjectMeta", True), "spec": ("PrometheusRuleSpec", True)},
    "PrometheusRuleSpec": {"groups": ("list[RuleGroup]", True)},
    "RuleGroup": {"name": ("str", True), "interval": ("str", False),
                  "rules": ("list[Rule]", True)},
    "Rule": {"record": ("str", False), "alert": ("str", False), "expr": ("str", True),
             "for": ("str", False), "labels": ("dict(str, str)", False),
             "annotations": ("dict(str, str)", False)},
}
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "ServiceMonitor",
                ("monitoring.coreos.com/v1", "PrometheusRule"): "PrometheusRule"}


def render(overlay):
    result = subprocess.run([KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True,
                            timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {overlay} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def renderings():
    """(name, objects) of every overlay, and of the base with each component (deploy/k8s/components,
    the optional parts) in a namespace of its own, as an overlay would add it."""
    found = [(overlay.name, render(overlay)) for overlay in OVERLAYS]
    for component in COMPONENTS:
        with tempfile.TemporaryDirectory() as folder:
            namespace = f"attnserve-{component.name}"
            relative = lambda path: os.path.relpath(path, folder)  # kustomize wants relative paths
            (pathlib.Path(folder) / "namespace.yaml").write_text(
                f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n")
            (pathlib.Path(folder) / "kustomization.yaml").write_text(yaml.safe_dump({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "namespace": namespace,
                "resources": ["namespace.yaml", relative(ROOT / "deploy" / "k8s" / "base")],
                "components": [relative(component)]}))
            found.append((f"base+{component.name}", render(folder)))
    return found


def required_fields(model):
    """JSON names of the fields a model requires: those whose setter rejects None (the models
    validate on the client side)."""
    instance = model.__new__(model)
    instance.local_vars_configuration = Configuration()
    required = []
    for attr in model.openapi_types:
        try:
            setattr(instance, attr, None)
        except ValueError:
            required.append(model.attribute_map[attr])
    return required


def check(value, type_name, path, errors):
    """Appends to `errors` every way `value` does not fit `type_name` (models' notation)."""
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            check(item, m.group(1), f"{path}[{i}]", errors)
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        if not isinstance(value, dict):
            errors.append(f"{path}: expected a map")
            return
        for key, item in value.items():
            check(item, m.group(1), f"{path}.{key}", errors)
        return
    scalar = {"str": str, "int": int, "bool": bool, "float": (int, float)}
    if type_name in scalar:
        if not isinstance(value, scalar[type_name]) or (type_name == "int" and isinstance(value, bool)):
            errors.append(f"{path}: expected {type_name}, got {value!r}")
        return
    if type_name == "object":  # int-or-string and free-form fields
        return
    if type_name in EXTRA_TYPES:
        fields = {name: t for name, (t, _) in EXTRA_TYPES[type_name].items()}
        required = [name for name, (_, req) in EXTRA_TYPES[type_name].items() if req]
    else:
        model = getattr(models, type_name)
        fields = {model.attribute_map[attr]: t for attr, t in model.openapi_types.items()}
        fields.update(EXTRA_FIELDS.get(type_name, {}))
        required = required_fields(model)
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object of type {type_name}")
        return
    for key, item in value.items():
        if key not in fields:
            errors.append(f"{path}.{key}: unknown field of {type_name}")
        else:
            check(item, fields[key], f"{path}.{key}", errors)
    for name in required:
        if name not in value:
            errors.append(f"{path}.{name}: required field of {type_name} missing")


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


@unittest.skipIf(KUBECTL is None, "kubectl is not installed (scripts/install_deps.sh test)")
class K8sManifestsTest(unittest.TestCase):

    def test_overlays_exist(self):
        self.assertEqual([o.name for o in OVERLAYS], ["dev", "production", "tls"])

    def test_every_object_fits_the_api_schemas(self):
        for name, objects in renderings():
            for obj in objects:
                key = (obj["apiVersion"], obj["kind"])
                with self.subTest(overlay=name, object=f"{key[1]}/{obj['metadata']['name']}"):
                    type_name = CUSTOM_KINDS.get(key) or MODELS.get(key)
                    self.assertIsNotNone(type_name, f"no schema for {key}")
                    errors = []
                    check(obj, type_name, key[1], errors)
                    self.assertEqual(errors, [])

    def test_the_prometheus_rule_is_the_rules_file(self):
        # Generated from deploy/prometheus/rules.yml (the rules' one source), never edited apart.
        result = subprocess.run(["/usr/bin/python3", str(ROOT / "scripts" / "prometheus_rule.py"),
                                 "--check"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        rendered = [o for _, objects in renderings() for o in by_kind(objects, "PrometheusRule")]
        self.assertTrue(rendered)
        rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
        for rule_object in rendered:
            self.assertEqual(rule_object["spec"]["groups"], rules["groups"])

    def test_a_misspelt_field_is_caught(self):
        # The validator itself: a typo in a probe, a string where an int belongs and a missing
        # required field all fail.
        (deployment,) = by_kind(render(OVERLAYS[0]), "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["readinessProbe"]["periodSecond"] = 5
        container["ports"][0]["containerPort"] = "50051"
        del container["name"]
        errors = []
        check(deployment, "V1Deployment", "Deployment", errors)
        self.assertEqual(len(errors), 3, errors)
        self.assertTrue(any("name: required" in e for e in errors), errors)

    def test_objects_fit_together(self):
        for name, objects in renderings():
            with self.subTest(overlay=name):
                # Every object in the overlay's namespace, which the overlay creates.
                namespaces = {o["metadata"].get("namespace") for o in objects
                              if o["kind"] != "Namespace"}
                self.assertEqual(len(namespaces), 1, namespaces)
                (namespace,) = by_kind(objects, "Namespace")
                self.assertEqual({namespace["metadata"]["name"]}, namespaces)
                (deployment,) = by_kind(objects, "Deployment")
                pod = deployment["spec"]["template"]
                labels = pod["metadata"]["labels"]
                self.assertTrue(selects(deployment["spec"]["selector"]["matchLabels"], labels))
                (container,) = pod["spec"]["containers"]
                ports = {p["name"]: p["containerPort"] for p in container["ports"]}
                (config,) = [c for c in by_kind(objects, "ConfigMap")
                             if c["metadata"]["name"] == container["envFrom"][0]["configMapRef"]["name"]]
                flags = config["data"]
                health = "FLAGS_health_address" in flags
                self.assertEqual(set(ports),
                                 {"grpc", "http", "metrics"} | ({"health"} if health else set()))

                # Probes: native gRPC health, on the plaintext health port when there is one (the
                # kubelet's gRPC probes do not speak TLS), else on the gRPC port, which then must
                # be plaintext.
                probed = ports["health"] if health else ports["grpc"]
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    self.assertEqual(container[probe]["grpc"]["port"], probed, probe)
                if health:
                    self.assertTrue(flags["FLAGS_health_address"].endswith(f":{ports['health']}"))
                else:
                    self.assertNotIn("FLAGS_tls_cert_file", flags)

                # TLS files come from a mounted Secret.
                volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                for flag in ("FLAGS_tls_cert_file", "FLAGS_tls_key_file", "FLAGS_tls_client_ca_file",
                             "FLAGS_auth_token_file"):
                    if flag in flags:
                        folder = str(pathlib.PurePosixPath(flags[flag]).parent)
                        self.assertIn(folder, mounts, flag)
                        self.assertIn("secret", volumes[mounts[folder]], flag)

                # The flags agree with the ports, and draining fits in the grace period.
                self.assertTrue(flags["FLAGS_grpc_address"].endswith(f":{ports['grpc']}"))
                self.assertTrue(flags["FLAGS_metrics_address"].endswith(f":{ports['metrics']}"))
                self.assertTrue(flags["FLAGS_http_address"].endswith(f":{ports['http']}"))
                pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
                self.assertGreater(pod["spec"]["terminationGracePeriodSeconds"],
                                   pause + float(flags["FLAGS_shutdown_grace_seconds"]))
                if "FLAGS_model_repository" in flags:
                    mounts = {m["mountPath"] for m in container["volumeMounts"]}
                    self.assertIn(flags["FLAGS_model_repository"], mounts)

                # Non-root, read-only root filesystem, no privilege escalation.
                self.assertTrue(pod["spec"]["securityContext"]["runAsNonRoot"])
                security = container["securityContext"]
                self.assertTrue(security["readOnlyRootFilesystem"])
                self.assertFalse(security["allowPrivilegeEscalation"])
                self.assertEqual(security["capabilities"]["drop"], ["ALL"])
                self.assertIn("cpu", container["resources"]["requests"])
                # The computations share as many threads as the pod requests CPUs.
                self.assertEqual(flags["FLAGS_compute_threads"],
                                 str(container["resources"]["requests"]["cpu"]))
                self.assertIn("memory", container["resources"]["limits"])

                # Services: both select the pods; one is headless; ports exist on the pod.
                services = by_kind(objects, "Service")
                self.assertEqual(sorted(s["spec"].get("clusterIP", "") for s in services),
                                 ["", "None"])
                for service in services:
                    self.assertTrue(selects(service["spec"]["selector"], labels))
                    for port in service["spec"]["ports"]:
                        self.assertIn(port["targetPort"], ports)

                # HPA, PDB and ServiceMonitor point at what exists.
                (hpa,) = by_kind(objects, "HorizontalPodAutoscaler")
                self.assertEqual(hpa["spec"]["scaleTargetRef"]["name"],
                                 deployment["metadata"]["name"])
                self.assertLessEqual(hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"])
                (pdb,) = by_kind(objects, "PodDisruptionBudget")
                self.assertTrue(selects(pdb["spec"]["selector"]["matchLabels"], labels))
                self.assertLess(pdb["spec"]["minAvailable"], hpa["spec"]["minReplicas"] + 1)
                # The HPA's metrics: CPU, which needs nothing beyond metrics-server, in every
                # rendering; a custom metric only where a component adds it.
                metric_types = [m["type"] for m in hpa["spec"]["metrics"]]
                self.assertIn("Resource", metric_types)
                if name != "base+inflight-autoscaling":
                    self.assertEqual(metric_types, ["Resource"])
                for monitor in by_kind(objects, "ServiceMonitor"):
                    monitored = [s for s in services
                                 if selects(monitor["spec"]["selector"]["matchLabels"],
                                            s["metadata"]["labels"])]
                    self.assertTrue(monitored)
                    for endpoint in monitor["spec"]["endpoints"]:
                        self.assertTrue(any(endpoint["port"] == p["name"]
                                            for s in monitored for p in s["spec"]["ports"]))

                # The NetworkPolicy selects the pods; every port of the pod it opens is one it
                # has (by name or number), and the metrics port only to a namespace selector.
                (policy,) = by_kind(objects, "NetworkPolicy")
                self.assertTrue(selects(policy["spec"]["podSelector"]["matchLabels"], labels))
                pod_ports = set(ports) | set(ports.values())
                for rule in policy["spec"]["ingress"]:
                    opened = {p["port"] for p in rule["ports"]}
                    self.assertTrue(opened & pod_ports, rule)
                    if "metrics" in opened:
                        self.assertTrue(all("namespaceSelector" in f for f in rule["from"]), rule)
                    else:
                        self.assertNotIn("from", rule)
                        self.assertNotIn("metrics", opened)

if __name__ == "__main__":
    unittest.main()
