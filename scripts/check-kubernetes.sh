#!/usr/bin/env bash
# Checks deploy/kubernetes/ offline, with no cluster:
#
#   1. renders the kustomization with a small built-in renderer (resources, secretGenerator
#      without hash suffix, namespace, images: what kustomization.yaml may use) into a
#      scratch copy that gets throwaway join-token and cluster-key files; where `kubectl`
#      is installed, also with `kubectl kustomize`, and requires the same objects;
#   2. validates every object, and prometheus-adapter-rules.yaml, strictly (unknown fields
#      are errors) against the Kubernetes JSON schemas bundled in the Python package
#      kubernetes-validate (a virtual environment in .venv-kubernetes), for each version in
#      KUBERNETES_VERSIONS (default "1.30 1.37");
#   3. proves the validator bites: a copy with `replicas: "three"` and one with an unknown
#      field must both be rejected;
#   4. asserts what the deployment relies on: readiness on /health/ready, a termination
#      grace period above DRAIN_GRACE_SECS + DRAIN_LISTEN_SECS, a PodDisruptionBudget, a
#      headless seeds Service, the HPA on the external metric spheromesh_desired_replicas,
#      selectors that match the pods, the hardened security contexts.
#
# `bash scripts/check-kubernetes.sh`. Needs python3 with venv and pip (installs
# python3-venv from Debian when root and it is missing). A tool that cannot be had makes
# it skip with a message, or fail under CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-kubernetes
KUBERNETES_VALIDATE=kubernetes-validate==1.37.0
KUBERNETES_VERSIONS=${KUBERNETES_VERSIONS:-1.30 1.37}
SRC=deploy/kubernetes

missing() {
    if [ "${CI:-}" = true ]; then
        echo "check-kubernetes: FAIL: $1" >&2
        exit 1
    fi
    echo "check-kubernetes: SKIP: $1 (CI=true makes this an error)" >&2
    exit 0
}

command -v python3 >/dev/null 2>&1 || missing "python3 not found"
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! "$VENV/bin/python" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    echo "check-kubernetes: installing $KUBERNETES_VALIDATE into $VENV"
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        if command -v apt-get >/dev/null 2>&1 && { [ -z "$SUDO" ] || command -v sudo >/dev/null 2>&1; }; then
            $SUDO apt-get update -qq || true
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
                missing "python3-venv could not be installed"
        else
            missing "python3 has no venv module and apt-get is not usable"
        fi
    fi
    rm -rf "$VENV"
    python3 -m venv "$VENV" || missing "python3 -m venv $VENV failed"
    "$VENV/bin/pip" install -q "$KUBERNETES_VALIDATE" || missing "pip install $KUBERNETES_VALIDATE failed"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# A copy with throwaway secret inputs: real ones, if an operator made them, stay untouched
# and are never read.
cp -r "$SRC" "$scratch/kustomize"
rm -f "$scratch/kustomize/join-token" "$scratch/kustomize/cluster-key"
printf '%s\n' "throwaway-join-token-for-validation-0123456789abcdef" > "$scratch/kustomize/join-token"
printf '%s' "0000000000000000000000000000000000000000000000000000000000000000" > "$scratch/kustomize/cluster-key"

kubectl_out=""
if command -v "${KUBECTL:-kubectl}" >/dev/null 2>&1; then
    kubectl_out="$scratch/kubectl-kustomize.yaml"
    if ! timeout 120 "${KUBECTL:-kubectl}" kustomize "$scratch/kustomize" >"$kubectl_out"; then
        echo "check-kubernetes: FAIL: kubectl kustomize $SRC failed" >&2
        exit 1
    fi
fi

"$VENV/bin/python" - "$scratch/kustomize" "$SRC/prometheus-adapter-rules.yaml" "$kubectl_out" \
    "$KUBERNETES_VERSIONS" <<'EOF'
import base64, copy, json, os, sys

import yaml
import kubernetes_validate
import kubernetes_validate.utils

kdir, adapter_file, kubectl_out, versions = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split()
problems = []


def fail(msg):
    problems.append(msg)


def die(msg):
    sys.exit(f"check-kubernetes: FAIL: {msg}")


# -- 1. render -----------------------------------------------------------------------
def load_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def render(kdir):
    """kustomize's build for the subset kustomization.yaml may use; anything else stops."""
    k = yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml")))
    known = {"apiVersion", "kind", "resources", "secretGenerator", "generatorOptions", "namespace", "images"}
    if set(k) - known:
        die(f"kustomization.yaml uses {sorted(set(k) - known)}: not handled by this renderer")
    objects = []
    for res in k.get("resources", []):
        path = os.path.join(kdir, res)
        if not os.path.isfile(path):
            die(f"resource {res} is not a file in {kdir}")
        objects += load_docs(path)
    opts = k.get("generatorOptions", {})
    if set(opts) - {"disableNameSuffixHash"} or not opts.get("disableNameSuffixHash"):
        die("generatorOptions must be exactly disableNameSuffixHash: true (no hash rewriting here)")
    for gen in k.get("secretGenerator", []):
        if set(gen) - {"name", "files", "literals", "type"}:
            die(f"secretGenerator {gen.get('name')} uses {sorted(set(gen) - {'name', 'files', 'literals', 'type'})}")
        data = {}
        for entry in gen.get("files", []):
            key, _, path = entry.rpartition("=")
            key = key or os.path.basename(path)
            data[key] = base64.b64encode(open(os.path.join(kdir, path), "rb").read()).decode()
        for entry in gen.get("literals", []):
            key, _, value = entry.partition("=")
            data[key] = base64.b64encode(value.encode()).decode()
        objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": gen["name"]},
                        "type": gen.get("type", "Opaque"), "data": data})
    if "namespace" in k:
        for o in objects:
            o["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for o in objects:
            spec = o.get("spec", {}).get("template", {}).get("spec", {})
            for c in spec.get("containers", []) + spec.get("initContainers", []):
                ref, _, digest = c["image"].partition("@")
                name, tag = ref, ""
                if ":" in ref.rsplit("/", 1)[-1]:
                    name, tag = ref.rsplit(":", 1)
                if name != img["name"]:
                    continue
                name = img.get("newName", name)
                if "digest" in img:
                    c["image"] = f"{name}@{img['digest']}"
                else:
                    tag = img.get("newTag", tag)
                    c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    return objects


def key(o):
    return (o["kind"], o["metadata"]["name"])


def normal(o):
    """kustomize wraps long base64 values over lines: compare Secret data decoded."""
    if o["kind"] != "Secret":
        return o
    o = copy.deepcopy(o)
    o["data"] = {k_: base64.b64decode("".join(v.split())) for k_, v in o.get("data", {}).items()}
    return o


objects = render(kdir)
renderers = "built-in renderer"
if kubectl_out:
    theirs = load_docs(kubectl_out)
    ours_by, theirs_by = {key(o): o for o in objects}, {key(o): o for o in theirs}
    if sorted(ours_by) != sorted(theirs_by):
        die(f"kubectl kustomize renders {sorted(theirs_by)}, the built-in renderer {sorted(ours_by)}")
    for k_ in ours_by:
        if normal(ours_by[k_]) != normal(theirs_by[k_]):
            die(f"{k_[0]}/{k_[1]} differs between kubectl kustomize and the built-in renderer:\n"
                f"kubectl:  {json.dumps(theirs_by[k_], sort_keys=True)}\nbuilt-in: {json.dumps(ours_by[k_], sort_keys=True)}")
    renderers = "built-in renderer = kubectl kustomize"
if len({key(o) for o in objects}) != len(objects):
    die("two objects share a kind and name")

adapter = load_docs(adapter_file)
to_validate = objects + adapter


# -- 2. schemas ----------------------------------------------------------------------
def validate(o, version):
    """None if valid, else the first error."""
    try:
        kubernetes_validate.validate(o, version, strict=True)
        return None
    except kubernetes_validate.ValidationError as e:
        where = "/".join(str(p) for p in e.path) or "(top)"
        return f"{where}: {e.message}"
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.utils.VersionNotSupportedError) as e:
        return e.message


for version in versions:
    for o in to_validate:
        err = validate(o, version)
        if err:
            fail(f"{o['kind']}/{o['metadata']['name']} is invalid for Kubernetes {version}: {err}")

# -- 3. the validator must reject broken copies ----------------------------------------
workers = next((o for o in objects if key(o) == ("Deployment", "spheromesh")), None)
if workers is None:
    die("no Deployment spheromesh")
broken_type = copy.deepcopy(workers)
broken_type["spec"]["replicas"] = "three"
broken_field = copy.deepcopy(workers)
broken_field["spec"]["template"]["spec"]["containers"][0]["readinessProb"] = {}
for name, broken in (("replicas: \"three\"", broken_type), ("unknown field readinessProb", broken_field)):
    if validate(broken, versions[0]) is None:
        die(f"the validator accepted a Deployment with {name}: it checks nothing")

# -- 4. what the deployment relies on --------------------------------------------------
def get(kind, name):
    o = next((o for o in objects if key(o) == (kind, name)), None)
    if o is None:
        fail(f"no {kind} {name}")
    return o or {}


def matches(selector, labels):
    return all(labels.get(k_) == v for k_, v in selector.items())


pod = workers["spec"]["template"]
wlabels = pod["metadata"]["labels"]
c = pod["spec"]["containers"][0]
env = {e["name"]: e for e in c.get("env", [])}
ports = {p["name"]: p for p in c.get("ports", [])}


def probe(name):
    p = c.get(name) or {}
    http = p.get("httpGet", {})
    port = http.get("port")
    port = ports.get(port, {}).get("containerPort") if isinstance(port, str) else port
    return p, http.get("path"), port


p, path, port = probe("readinessProbe")
if (path, port) != ("/health/ready", 5002):
    fail(f"worker readinessProbe is {path} on {port}, not /health/ready on 5002")
for name in ("livenessProbe", "startupProbe"):
    _, path, port = probe(name)
    if (path, port) != ("/health/live", 5002):
        fail(f"worker {name} is {path} on {port}, not /health/live on 5002")
sp = c.get("startupProbe", {})
if sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3) < 60:
    fail("worker startupProbe allows under 60 s for enrolment and model load")
try:
    drain = int(env["DRAIN_GRACE_SECS"]["value"]) + int(env["DRAIN_LISTEN_SECS"]["value"])
except (KeyError, ValueError):
    fail("worker lacks literal DRAIN_GRACE_SECS and DRAIN_LISTEN_SECS")
    drain = 0
grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
if not grace > drain:
    fail(f"terminationGracePeriodSeconds {grace} is not above DRAIN_GRACE_SECS + DRAIN_LISTEN_SECS = {drain}")
for var, field in (("HOSTNAME", "metadata.name"), ("ADVERTISE_HOST", "status.podIP")):
    if env.get(var, {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != field:
        fail(f"worker {var} does not come from {field}")
for var, want in (("SEEDS", "spheromesh-seeds:7946"), ("ENROLL_URL", "http://spheromesh-ca:7900")):
    if env.get(var, {}).get("value") != want:
        fail(f"worker {var} is not {want}")
if {(n, p_.get("containerPort"), p_.get("protocol", "TCP")) for n, p_ in ports.items()} != \
        {("http", 5002, "TCP"), ("quic", 5003, "UDP"), ("gossip", 7946, "UDP")}:
    fail("worker ports are not http 5002/TCP, quic 5003/UDP, gossip 7946/UDP")
ann = pod["metadata"].get("annotations", {})
if (ann.get("prometheus.io/scrape"), ann.get("prometheus.io/port"), ann.get("prometheus.io/path")) != ("true", "5002", "/metrics"):
    fail("worker pods lack the prometheus.io scrape annotations for 5002 /metrics")

pdb = get("PodDisruptionBudget", "spheromesh")
if pdb and (pdb["spec"].get("maxUnavailable") != 1 or not matches(pdb["spec"]["selector"]["matchLabels"], wlabels)):
    fail("PodDisruptionBudget spheromesh is not maxUnavailable 1 over the worker pods")

seeds = get("Service", "spheromesh-seeds")
if seeds:
    s = seeds["spec"]
    if s.get("clusterIP") != "None" or s.get("publishNotReadyAddresses") is not True:
        fail("Service spheromesh-seeds is not headless (clusterIP None) with publishNotReadyAddresses")
    if not any(p_["port"] == 7946 and p_.get("protocol") == "UDP" for p_ in s["ports"]):
        fail("Service spheromesh-seeds has no 7946/UDP port")
    if not matches(s["selector"], wlabels):
        fail("Service spheromesh-seeds does not select the worker pods")
svc = get("Service", "spheromesh")
if svc and (not matches(svc["spec"]["selector"], wlabels) or [p_["port"] for p_ in svc["spec"]["ports"]] != [5002]):
    fail("Service spheromesh is not port 5002 over the worker pods")

hpa = get("HorizontalPodAutoscaler", "spheromesh")
if hpa:
    h = hpa["spec"]
    ext = [m["external"] for m in h.get("metrics", []) if m.get("type") == "External"]
    if not ext or ext[0]["metric"]["name"] != "spheromesh_desired_replicas" or \
            ext[0]["target"] != {"type": "AverageValue", "averageValue": "1"}:
        fail("HPA does not use the external metric spheromesh_desired_replicas with AverageValue 1")
    if h["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment", "name": "spheromesh"}:
        fail("HPA does not scale Deployment spheromesh")
    if h.get("behavior", {}).get("scaleDown", {}).get("stabilizationWindowSeconds") != 300:
        fail("HPA scale-down stabilisation window is not 300 s")
rules = yaml.safe_load(adapter[0]["data"]["config.yaml"])["externalRules"]
if not any(r["name"]["as"] == "spheromesh_desired_replicas" and r["metricsQuery"].startswith("max(") for r in rules):
    fail("prometheus-adapter-rules.yaml does not expose max(spheromesh_desired_replicas)")

ca = get("Deployment", "spheromesh-ca")
if ca:
    if ca["spec"].get("replicas") != 1 or ca["spec"].get("strategy", {}).get("type") != "Recreate":
        fail("Deployment spheromesh-ca is not 1 replica with strategy Recreate")
    cac = ca["spec"]["template"]["spec"]["containers"][0]
    if cac.get("args", [])[:2] != ["ca", "serve"] or not any(m["mountPath"] == "/ca" for m in cac.get("volumeMounts", [])):
        fail("the CA does not run `ca serve` with its volume at /ca")
    if matches(ca["spec"]["template"]["metadata"]["labels"], {"app.kubernetes.io/name": "spheromesh"}):
        fail("the CA pods carry the workers' name label: the worker Services would select them")
casvc = get("Service", "spheromesh-ca")
if ca and casvc and not matches(casvc["spec"]["selector"], ca["spec"]["template"]["metadata"]["labels"]):
    fail("Service spheromesh-ca does not select the CA pod")
get("PersistentVolumeClaim", "spheromesh-ca")
secret = get("Secret", "spheromesh-join")
if secret and set(secret.get("data", {})) != {"join-token", "cluster-key"}:
    fail("Secret spheromesh-join does not hold exactly join-token and cluster-key")

for d in (workers, ca):
    if not d:
        continue
    spec = d["spec"]["template"]["spec"]
    psc = spec.get("securityContext", {})
    if (psc.get("runAsNonRoot"), psc.get("runAsUser"), psc.get("fsGroup")) != (True, 10001, 10001):
        fail(f"{d['metadata']['name']}: pod securityContext is not runAsNonRoot, uid 10001, fsGroup 10001")
    for cc in spec["containers"]:
        csc = cc.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True or csc.get("allowPrivilegeEscalation") is not False \
                or csc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(f"{d['metadata']['name']}/{cc['name']}: not read-only root, no privilege escalation, all capabilities dropped")
        if not any(m["mountPath"] == "/tmp" for m in cc.get("volumeMounts", [])):
            fail(f"{d['metadata']['name']}/{cc['name']}: no writable /tmp")
    for v in spec.get("volumes", []):
        if "secret" in v and v["secret"]["secretName"] == "spheromesh-join" and v["secret"].get("defaultMode") != 0o400:
            fail(f"{d['metadata']['name']}: the join token volume is not mode 0400")

for o in objects:
    if "namespace" in o["metadata"] and "namespace" not in yaml.safe_load(open(os.path.join(kdir, "kustomization.yaml"))):
        fail(f"{o['kind']}/{o['metadata']['name']} hard-codes a namespace")

if problems:
    for p_ in problems:
        print(f"check-kubernetes: FAIL: {p_}", file=sys.stderr)
    sys.exit(1)
kinds = ", ".join(f"{k_}/{n}" for k_, n in sorted(key(o) for o in objects))
print(f"check-kubernetes: {len(objects)} objects rendered ({renderers}): {kinds}")
print(f"check-kubernetes: plus {os.path.basename(adapter_file)}: {', '.join(key(o)[0] + '/' + key(o)[1] for o in adapter)}")
print("check-kubernetes: validator self-test: replicas \"three\" and an unknown field both rejected")
print(f"check-kubernetes: {len(to_validate)} objects valid against Kubernetes {', '.join(versions)} schemas "
      f"(kubernetes-validate {kubernetes_validate.__version__}, strict), deployment properties hold")
EOF
