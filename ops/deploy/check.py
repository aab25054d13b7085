"""The checks of ops/deploy that no off-the-shelf tool makes, for check.sh.

    python3 check.py WORK COMPOSE_RESOLVED K8S_BUILT

WORK is an empty directory: it receives the files check.sh hands to the
tools (the Grafana queries as recording rules for promtool, the Kubernetes
Prometheus config in a form Debian's promtool reads, the NATS config of the
StatefulSet). COMPOSE_RESOLVED is `docker-compose config` output, K8S_BUILT
`kubectl kustomize` output. Exits 1 with every problem listed.
"""

import json
import re
import shutil
import sys
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent.parent
OXBASE_IMAGE = "oxbase:local"
# Metrics rules.yml may use that oxbase does not export: Prometheus's own,
# and kube-state-metrics' for the Kubernetes group.
FOREIGN_METRICS = {"up", "kube_pod_status_ready"}
# The variables Grafana fills in, with values promtool accepts.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
# Environment variables oxbase reads that are no config key.
NON_KEY_VARIABLES = {"OXBASE_CONFIG"}
# The stream replicas not in a section of their own.
EVENTS_REPLICAS = "OXBASE_EVENTS__STREAM__REPLICAS"

problems = []


def problem(text):
    problems.append(text)


def rust_sources():
    """The services' and the contract's code, without the test suites."""
    for base in (ROOT / "services", ROOT / "proto"):
        for path in base.rglob("*.rs"):
            parts = path.relative_to(base).parts
            if "tests" not in parts and "src" in parts:
                yield path


SOURCES = {path: path.read_text() for path in rust_sources()}
SOURCE = "\n".join(SOURCES.values())
SOURCE_WORDS = set(re.findall(r"\w+", SOURCE))


def load_yaml_documents(path):
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


# Metric names ---------------------------------------------------------------


def metric_names(expr):
    return set(re.findall(r"\b(?:oxbase|kube)_[a-z0-9_]+\b", expr)) | (
        {"up"} if re.search(r"\bup\b", expr) else set()
    )


def check_metric(name, where):
    if name in FOREIGN_METRICS:
        return
    if not name.startswith("oxbase_"):
        problem(f"{where}: {name} is not a metric oxbase exports")
    elif name not in SOURCE_WORDS:
        problem(f"{where}: {name} does not appear in oxbase's source (renamed?)")


def rule_expressions():
    rules = yaml.safe_load((DEPLOY / "prometheus/rules.yml").read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def dashboard_panels(panels):
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_expressions():
    text = (DEPLOY / "grafana/oxbase.json").read_text()
    try:
        dashboard = json.loads(text)
    except json.JSONDecodeError as err:
        problem(f"grafana/oxbase.json is not JSON: {err}")
        return
    ids = set()
    for panel in dashboard_panels(dashboard.get("panels", [])):
        if panel.get("id") in ids:
            problem(f"grafana/oxbase.json: panel id {panel.get('id')} twice")
        ids.add(panel.get("id"))
        for target in panel.get("targets", []):
            yield f"{panel['title']} {target['refId']}", target["expr"]


def check_metrics(work):
    used = set()
    for name, expr in rule_expressions():
        for metric in metric_names(expr):
            check_metric(metric, f"rules.yml {name}")
            used.add(metric)
    # The list of oxbase's metrics in the comments too.
    for metric in set(re.findall(r"\boxbase_[a-z0-9_]+\b", (DEPLOY / "prometheus/rules.yml").read_text())):
        check_metric(metric, "rules.yml")
    recording = []
    for name, expr in dashboard_expressions():
        for metric in metric_names(expr):
            check_metric(metric, f"grafana/oxbase.json {name}")
            used.add(metric)
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        if "$" in expr:
            problem(f"grafana/oxbase.json {name}: a variable check.py cannot fill in: {expr}")
        recording.append({"record": f"dashboard:panel_{len(recording)}", "expr": expr})
    if not recording:
        problem("grafana/oxbase.json has no queries")
    rules = {"groups": [{"name": "dashboard", "rules": recording}]}
    (work / "dashboard-rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    print("  metrics used: " + " ".join(sorted(used)))


# Prometheus on Kubernetes -----------------------------------------------------

KUBERNETES_SD_KEYS = {
    "role", "namespaces", "selectors", "api_server", "kubeconfig_file",
    "attach_metadata", "follow_redirects", "enable_http2", "tls_config",
    "authorization", "basic_auth", "oauth2", "proxy_url",
}
KUBERNETES_SD_ROLES = {"node", "pod", "service", "endpoints", "endpointslice", "ingress"}


def kubernetes_config_for_promtool(work):
    """prometheus-k8s.yml with its kubernetes_sd_configs checked here and
    replaced by a static target: Debian builds promtool without Kubernetes
    discovery, and everything else in the file is left to promtool."""
    config = yaml.safe_load((DEPLOY / "prometheus/prometheus-k8s.yml").read_text())
    for scrape in config.get("scrape_configs", []):
        discovery = scrape.pop("kubernetes_sd_configs", None)
        if discovery is None:
            continue
        for sd in discovery:
            unknown = set(sd) - KUBERNETES_SD_KEYS
            if unknown:
                problem(f"prometheus-k8s.yml {scrape['job_name']}: unknown kubernetes_sd_configs keys {sorted(unknown)}")
            if sd.get("role") not in KUBERNETES_SD_ROLES:
                problem(f"prometheus-k8s.yml {scrape['job_name']}: role {sd.get('role')!r}")
            names = sd.get("namespaces", {}).get("names", [])
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                problem(f"prometheus-k8s.yml {scrape['job_name']}: namespaces.names must be a list of names")
        scrape["static_configs"] = [{"targets": ["pod.invalid:1337"]}]
    out = work / "prometheus-k8s"
    out.mkdir()
    (out / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    for rule_file in config.get("rule_files", []):
        shutil.copy(DEPLOY / "prometheus" / rule_file, out / rule_file)


# oxbase's settings ----------------------------------------------------------


def config_keys():
    """Top-level keys (Config's fields and the sections' KEYs), and every
    field name of the services' structs, for the deeper levels."""
    kit = (ROOT / "services/kit/src/config.rs").read_text()
    body = re.search(r"pub struct Config \{(.*?)\n\}", kit, re.S).group(1)
    top = set(re.findall(r"pub (\w+):", body))
    top |= set(re.findall(r'const KEY: &\'static str = "(\w+)"', SOURCE))
    fields = set(re.findall(r"pub (\w+):", SOURCE))
    return top, fields


def replicated_sections():
    """OXBASE_<SECTION>__REPLICAS for each section with a `replicas` key."""
    wanted = {EVENTS_REPLICAS}
    for text in SOURCES.values():
        key = re.search(r'const KEY: &\'static str = "(\w+)"', text)
        if key and re.search(r"pub replicas: usize", text):
            wanted.add(f"OXBASE_{key.group(1).upper()}__REPLICAS")
    return wanted


TOP, FIELDS = config_keys()
REPLICATED = replicated_sections()


def check_variable(name, where):
    if not name.startswith("OXBASE_") or name in NON_KEY_VARIABLES:
        return
    first, *rest = name[len("OXBASE_"):].lower().split("__")
    if first not in TOP or any(part not in FIELDS for part in rest):
        problem(f"{where}: {name} names no oxbase setting, so oxbase would ignore it")


def check_settings(env, where, shutdown_grace, command):
    """One oxbase process's environment: real settings, three copies of
    every stream and bucket, every NATS node, and a stop grace longer than
    the shutdown timeout (after the API's drain delay, for `api`)."""
    for name in env:
        check_variable(name, where)
    for name in sorted(REPLICATED):
        if str(env.get(name)) != "3":
            problem(f"{where}: {name} should be 3, is {env.get(name)!r}")
    servers = [url for url in str(env.get("OXBASE_NATS_URL", "")).split(",") if url.strip()]
    if len(servers) != 3:
        problem(f"{where}: OXBASE_NATS_URL should list the 3 NATS servers: {servers}")
    timeout = int(env.get("OXBASE_SHUTDOWN_TIMEOUT_SECS", 10))
    if command in ("api", "all"):
        timeout += int(env.get("OXBASE_DRAIN_DELAY_MS", 5000)) / 1000
    if shutdown_grace is None or shutdown_grace <= timeout:
        problem(f"{where}: the stop grace ({shutdown_grace} s) must exceed drain_delay_ms and shutdown_timeout_secs ({timeout} s)")


def seconds(duration):
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", str(duration or ""))
    if not match or not any(match.groups()):
        return None
    return int(match.group(1) or 0) * 60 + int(match.group(2) or 0)


def check_compose(resolved):
    services = yaml.safe_load(Path(resolved).read_text())["services"]
    oxbase = {name: svc for name, svc in services.items() if svc.get("image") == OXBASE_IMAGE}
    commands = {svc.get("command", ["api"])[0] for svc in oxbase.values()}
    missing = {"api", "triggers", "jobs", "cron", "push", "livequery"} - commands
    if missing:
        problem(f"compose.yaml runs no oxbase {' '.join(sorted(missing))}")
    for name, svc in oxbase.items():
        check_settings(svc.get("environment", {}), f"compose.yaml {name}", seconds(svc.get("stop_grace_period")),
                       svc.get("command", ["api"])[0])
        if "healthcheck" not in svc:
            problem(f"compose.yaml {name}: no healthcheck")


def check_kubernetes(built, work):
    documents = load_yaml_documents(built)
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in documents if d["kind"] == "ConfigMap"}
    deployments = [d for d in documents if d["kind"] == "Deployment"]
    commands = set()
    for deployment in deployments:
        where = f"k8s Deployment {deployment['metadata']['name']}"
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            commands.add(container.get("args", ["api"])[0])
            env = {}
            for source in container.get("envFrom", []):
                env.update(configmaps.get(source.get("configMapRef", {}).get("name"), {}))
            for var in container.get("env", []):
                env[var["name"]] = var.get("value", "(from a Secret)")
            prestop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            drain = int(prestop[1]) if prestop[:1] == ["sleep"] else 0
            check_settings(env, where, pod.get("terminationGracePeriodSeconds", 30) - drain,
                           container.get("args", ["api"])[0])
            probes = {kind: container.get(kind, {}).get("httpGet", {}).get("path")
                      for kind in ("readinessProbe", "livenessProbe")}
            if probes != {"readinessProbe": "/ready", "livenessProbe": "/health"}:
                problem(f"{where}: probes should be /ready and /health: {probes}")
            if not container.get("resources", {}).get("limits"):
                problem(f"{where}: no resource limits")
    missing = {"api", "triggers", "jobs", "cron", "push", "livequery"} - commands
    if missing:
        problem(f"k8s runs no oxbase {' '.join(sorted(missing))}")
    budgets = {tuple(sorted(d["spec"]["selector"]["matchLabels"].items()))
               for d in documents if d["kind"] == "PodDisruptionBudget"}
    for deployment in deployments:
        if tuple(sorted(deployment["spec"]["selector"]["matchLabels"].items())) not in budgets:
            problem(f"k8s Deployment {deployment['metadata']['name']}: no PodDisruptionBudget")
    nats = configmaps.get("nats-config", {}).get("nats.conf")
    if nats is None:
        problem("k8s: no ConfigMap nats-config with nats.conf")
    else:
        (work / "nats-k8s.conf").write_text(nats)


def check_kustomization():
    kustomization = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    present = {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - {"kustomization.yaml"}
    for name in sorted(present - listed):
        problem(f"k8s/{name} is not in kustomization.yaml, so it is never applied")


def main():
    work, resolved, built = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    check_metrics(work)
    kubernetes_config_for_promtool(work)
    check_compose(resolved)
    check_kubernetes(built, work)
    check_kustomization()
    for text in problems:
        print(f"  PROBLEM: {text}", file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
