#!/usr/bin/env bash
# Validates the deployment files of ops/deploy, offline, in seconds:
#   - compose.yaml with docker-compose (v1, Debian's package): it parses with
#     .env.example, and refuses to run without the secrets;
#   - the Kubernetes manifests, each file and the kustomization's output
#     (kubectl kustomize), against Kubernetes' published schemas with
#     kubernetes-validate --strict, which rejects unknown fields;
#   - prometheus/*.yml with promtool: both configs, the rules, and the rules'
#     unit tests (rules_test.yml);
#   - the Grafana dashboard: it parses, and its queries are valid PromQL;
#   - the Caddyfile (caddy validate) and both NATS configs (nats-server -t);
#   - with check.py: every metric the rules and the dashboard use is in
#     oxbase's source, every OXBASE_ variable names a real setting, every
#     oxbase process has replicas 3, all three NATS servers, a stop grace
#     longer than its shutdown timeout, and (Kubernetes) probes, limits and
#     a PodDisruptionBudget.
# Exits non-zero on any problem.
#
# The tools: ops/test.sh installs them (its "deployment files" step):
# docker-compose system-wide; kubernetes-validate into
# $TOOLS/kubernetes-validate; kubectl, promtool and caddy (from Debian's
# packages, without their services) and nats-server into $TOOLS/bin.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
TOOLS=${TOOLS:-$ROOT/.oxbase/tools}
export PATH="$TOOLS/bin:$PATH"
VALIDATE=$TOOLS/kubernetes-validate
# The oldest Kubernetes the manifests are meant for; the newest schemas
# kubernetes-validate bundles are checked too.
KUBERNETES_MIN=1.29.0

for tool in docker-compose kubectl promtool caddy nats-server; do
  command -v "$tool" >/dev/null || { echo "check.sh: $tool is missing (ops/test.sh installs it)" >&2; exit 1; }
done
[ -d "$VALIDATE/kubernetes_validate" ] \
  || { echo "check.sh: kubernetes-validate is missing from $VALIDATE (ops/test.sh installs it)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ok() { printf '  ok: %s\n' "$*"; }
# Runs a tool quietly, showing its output only when it fails.
quiet() {
  if ! "$@" >"$work/out" 2>&1; then
    cat "$work/out" >&2
    echo "check.sh: failed: $*" >&2
    return 1
  fi
}

# The secrets, which compose.yaml must refuse to run without.
SECRETS=(OXBASE_MASTER_KEY POSTGRES_PASSWORD)
compose() { env "${SECRETS[@]/#/-u}" docker-compose -f compose.yaml "$@"; }
compose --env-file .env.example --profile monitoring config >"$work/compose.yaml" 2>"$work/out" \
  || { cat "$work/out" >&2; echo "check.sh: compose.yaml does not parse" >&2; exit 1; }
for secret in "${SECRETS[@]}"; do
  grep -v "^$secret=" .env.example >"$work/without.env"
  if compose --env-file "$work/without.env" config -q >/dev/null 2>&1; then
    echo "check.sh: compose.yaml starts without $secret" >&2
    exit 1
  fi
done
ok "compose.yaml ($(docker-compose version --short))"

kubectl kustomize k8s >"$work/k8s.yaml"
manifests=()
for file in k8s/*.yaml; do
  [ "$file" = k8s/kustomization.yaml ] || manifests+=("$file")
done
validate() { PYTHONPATH="$VALIDATE" python3 -m kubernetes_validate --strict --quiet "$@"; }
quiet validate -k "$KUBERNETES_MIN" "${manifests[@]}" "$work/k8s.yaml"
quiet validate "${manifests[@]}" "$work/k8s.yaml"
ok "k8s: ${#manifests[@]} files and their kustomization, Kubernetes $KUBERNETES_MIN and newest (kubernetes-validate $(PYTHONPATH="$VALIDATE" python3 -m kubernetes_validate --version))"

PYTHONPATH="$VALIDATE" python3 check.py "$work" "$work/compose.yaml" "$work/k8s.yaml"
ok "metric names, settings, replicas, NATS servers, grace periods, probes (check.py)"

quiet promtool check config prometheus/prometheus.yml
quiet promtool check config "$work/prometheus-k8s/prometheus.yml"
quiet promtool check rules prometheus/rules.yml
(cd prometheus && quiet promtool test rules rules_test.yml)
quiet promtool check rules "$work/dashboard-rules.yml"
ok "prometheus configs, rules, rule tests, dashboard queries ($(promtool --version 2>&1 | head -n1))"

quiet caddy validate --config Caddyfile --adapter caddyfile
ok "Caddyfile (caddy $(caddy version))"

quiet nats-server -t -c nats/nats.conf
POD_NAME=nats-0 quiet nats-server -t -c "$work/nats-k8s.conf"
ok "NATS configs ($(nats-server --version))"
