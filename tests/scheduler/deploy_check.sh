#!/usr/bin/env bash
# deploy/ checks: Prometheus config and alert rules pass promtool; every kustomization renders
# with `kubectl kustomize` and yields the objects it promises. A missing tool is a failure;
# scripts/setup.sh installs both.
set -euo pipefail
deploy="$1"
fail() { echo "deploy_check: FAILED: $*" >&2; exit 1; }
for tool in promtool kubectl; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found; deploy/ cannot be checked (run scripts/setup.sh)"
done
promtool check config "$deploy/prometheus/prometheus.yml" || fail "promtool check config"
promtool check rules "$deploy"/prometheus/rules/*.yml || fail "promtool check rules"

render() {
  kubectl kustomize "$deploy/k8s/$1" || fail "kubectl kustomize deploy/k8s/$1"
}
expect() {  # expect <rendered> <regex> <what>
  grep -Eq "$2" <<<"$1" || fail "$3"
}
out=$(render scheduler)
for kind in Namespace Deployment Service PersistentVolumeClaim DaemonSet; do
  expect "$out" "^kind: $kind\$" "deploy/k8s/scheduler renders no $kind"
done
expect "$out" "claimName: weft-scheduler-state" "scheduler Deployment does not mount its PVC"
expect "$out" "^  namespace: weft\$" "scheduler objects are not in namespace weft"
expect "$out" "image: weft:dev" "image not rewritten by kustomize"
out=$(render examples/training)
expect "$out" "^kind: Job\$" "training example renders no Job"
expect "$out" "completionMode: Indexed" "training Job is not an Indexed Job"
expect "$out" "clusterIP: None" "training Service is not headless"
expect "$out" "name: WEFT_METRICS_PORT" "training Job does not serve rank metrics"
out=$(render examples/mpijob)
expect "$out" "^kind: MPIJob\$" "mpijob example renders no MPIJob"
grep -q "^FROM debian:12 AS build" "$deploy/Dockerfile" || fail "Dockerfile has no Debian 12 build stage"
grep -q "^FROM debian:12 AS runtime" "$deploy/Dockerfile" || fail "Dockerfile has no runtime stage"
echo "deploy_check: promtool config/rules OK; 3 kustomizations render; Dockerfile stages OK"
