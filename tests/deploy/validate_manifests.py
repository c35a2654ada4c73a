"""Static checks of the deployment files in deploy/ and k8s/.

Run through tests/deploy/validate.sh. Every problem found is printed and makes
the exit status non-zero; `--self-test` breaks copies of the files on purpose
and asserts that each fault is caught.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ENV_PREFIX = "DEEPCUTS__"
SECTIONS = ("store", "queue", "telemetry", "ops", "worker", "settings")
# Section -> the Rust struct that deserialises it (services/core/src).
SECTION_STRUCTS = {
    "store": "StoreConfig",
    "queue": "QueueConfig",
    "telemetry": "TelemetryConfig",
    "ops": "OpsConfig",
    "worker": "WorkerConfig",
}
# Nested tables: (section, key) -> struct.
NESTED_STRUCTS = {("store", "s3"): "S3Config"}
DRAIN_VAR = "DEEPCUTS__WORKER__DRAIN_TIMEOUT_MS"
DRAIN_DEFAULT_MS = 30_000  # WorkerConfig::default()
METRICS_PORT = 9464
LIVEZ = "/health/livez"
READYZ = "/health/readyz"


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def error(self, where: str, message: str) -> None:
        self.errors.append(f"{where}: {message}")

    def ok(self, what: str) -> None:
        self.checked.append(what)


# ------------------------------------------------------------ Rust config keys


def rust_struct_fields(files: list[Path]) -> dict[str, set[str]]:
    structs: dict[str, set[str]] = {}
    pattern = re.compile(r"pub struct (\w+)(?:<[^>{]*>)?\s*\{(.*?)\n\}", re.S)
    for path in files:
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            fields = re.findall(r"^\s*pub (\w+)\s*:", match.group(2), re.M)
            structs.setdefault(match.group(1), set()).update(fields)
    return structs


@dataclass
class ConfigKeys:
    structs: dict[str, set[str]]
    settings: set[str]

    @classmethod
    def load(cls, source_root: Path, findings: Findings) -> "ConfigKeys":
        core = sorted((source_root / "services/core/src").rglob("*.rs"))
        structs = rust_struct_fields(core)
        wanted = list(SECTION_STRUCTS.values()) + list(NESTED_STRUCTS.values())
        missing = [name for name in wanted if not structs.get(name)]
        if missing:
            findings.error("services/core/src", f"config structs not found: {', '.join(missing)}")
        services = sorted((source_root / "services").glob("*/src/**/*.rs"))
        settings: set[str] = set()
        for name, fields in rust_struct_fields(services).items():
            if name.endswith("Settings"):
                settings |= fields
        findings.ok(
            "config keys read from the Rust structs: "
            + ", ".join(f"{s}({len(structs.get(n, ()))})" for s, n in SECTION_STRUCTS.items())
            + f", settings({len(settings)} fields of *Settings structs)"
        )
        return cls(structs, settings)

    def check(self, name: str, where: str, findings: Findings) -> None:
        if not name.startswith(ENV_PREFIX):
            return
        parts = name[len(ENV_PREFIX):].lower().split("__")
        if len(parts) < 2 or not all(parts):
            findings.error(where, f"{name}: expected DEEPCUTS__SECTION__KEY")
            return
        section, key, rest = parts[0], parts[1], parts[2:]
        if section not in SECTIONS:
            findings.error(where, f"{name}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
            return
        if section == "settings":
            if key not in self.settings:
                findings.error(where, f"{name}: no service has a setting {key!r}")
            return
        fields = self.structs.get(SECTION_STRUCTS[section], set())
        if key not in fields:
            findings.error(where, f"{name}: unknown key {key!r} in [{section}] (known: {', '.join(sorted(fields))})")
            return
        nested = NESTED_STRUCTS.get((section, key))
        if nested is None:
            if rest:
                findings.error(where, f"{name}: {section}.{key} has no sub-keys")
            return
        if len(rest) != 1 or rest[0] not in self.structs.get(nested, set()):
            findings.error(where, f"{name}: unknown key in [{section}.{key}] (known: {', '.join(sorted(self.structs.get(nested, ())))})")


# ----------------------------------------------------------------- YAML files


def load_yaml_files(root: Path, findings: Findings) -> dict[Path, list]:
    files = sorted(
        p for d in ("deploy", "k8s") for p in (root / d).rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
    )
    parsed: dict[Path, list] = {}
    for path in files:
        rel = path.relative_to(root)
        try:
            parsed[rel] = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
        except yaml.YAMLError as err:
            findings.error(str(rel), f"YAML does not parse: {err}")
    if not files:
        findings.error(str(root), "no YAML files under deploy/ or k8s/")
    findings.ok(f"{len(parsed)}/{len(files)} YAML files parse: " + ", ".join(str(p) for p in parsed))
    return parsed


def dockerfile_binaries(root: Path, findings: Findings) -> set[str]:
    path = root / "deploy/Dockerfile"
    if not path.is_file():
        findings.error("deploy/Dockerfile", "missing")
        return set()
    text = path.read_text(encoding="utf-8")
    match = re.search(r'^ARG DEEPCUTS_BINARIES="([^"]*)"', text, re.M)
    binaries = set(match.group(1).split()) if match else set()
    if not binaries:
        findings.error("deploy/Dockerfile", 'no ARG DEEPCUTS_BINARIES="..." list')
    runtime = text[text.rfind("\nFROM "):]
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    if not user or user[-1].split(":")[0] in ("0", "root"):
        findings.error("deploy/Dockerfile", "the runtime stage must switch to a non-root USER")
    if "LD_LIBRARY_PATH=" not in runtime:
        findings.error("deploy/Dockerfile", "the runtime stage must set LD_LIBRARY_PATH to torch/lib")
    findings.ok(f"Dockerfile: {len(binaries)} binaries listed ({' '.join(sorted(binaries))}), non-root runtime user")
    return binaries


def dockerfile_env_names(root: Path) -> list[str]:
    path = root / "deploy/Dockerfile"
    if not path.is_file():
        return []
    names = []
    for line in re.findall(r"^ENV\s+(.*(?:\\\n.*)*)", path.read_text(encoding="utf-8"), re.M):
        names += re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", line)
    return names


# ------------------------------------------------------------------ env names


def manifest_env_names(doc: dict) -> list[str]:
    kind = doc.get("kind")
    if kind == "ConfigMap":
        return list((doc.get("data") or {}).keys())
    if kind == "Secret":
        return list((doc.get("stringData") or {}).keys()) + list((doc.get("data") or {}).keys())
    names = []
    for container in pod_containers(doc):
        names += [e["name"] for e in container.get("env") or [] if "name" in e]
    return names


def pod_containers(doc: dict) -> list[dict]:
    spec = (((doc.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def check_env_names(root: Path, parsed: dict[Path, list], keys: ConfigKeys, findings: Findings) -> None:
    seen = 0
    for rel, docs in parsed.items():
        for doc in docs:
            if not isinstance(doc, dict):
                continue
            if rel.name == "docker-compose.yml":
                names = [n for s in (doc.get("services") or {}).values() for n in compose_env(s)]
                names += list(compose_env({"environment": doc.get("x-deepcuts", {}).get("environment", {})}))
            else:
                names = manifest_env_names(doc)
            for name in names:
                if name.startswith(ENV_PREFIX):
                    seen += 1
                    keys.check(name, str(rel), findings)
    for name in dockerfile_env_names(root):
        if name.startswith(ENV_PREFIX):
            seen += 1
            keys.check(name, "deploy/Dockerfile", findings)
    findings.ok(f"{seen} uses of DEEPCUTS__ variables name a known section ({', '.join(SECTIONS)}) and key")


# -------------------------------------------------------------- kustomize


def check_kustomizations(root: Path, findings: Findings) -> list[Path]:
    dirs = sorted(p.parent for p in (root / "k8s").rglob("kustomization.yaml"))
    if not dirs:
        findings.error("k8s", "no kustomization.yaml")
    for d in dirs:
        rel = d.relative_to(root)
        try:
            kust = yaml.safe_load((d / "kustomization.yaml").read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            continue  # already reported by the parse check
        referenced = set()
        for entry in kust.get("resources") or []:
            target = (d / entry).resolve()
            referenced.add(target)
            if target.is_dir():
                if not (target / "kustomization.yaml").is_file():
                    findings.error(f"{rel}/kustomization.yaml", f"resource {entry} is a directory without kustomization.yaml")
            elif not target.is_file():
                findings.error(f"{rel}/kustomization.yaml", f"resource {entry} does not exist")
        for patch in kust.get("patches") or []:
            if "path" in patch:
                target = (d / patch["path"]).resolve()
                referenced.add(target)
                if not target.is_file():
                    findings.error(f"{rel}/kustomization.yaml", f"patch {patch['path']} does not exist")
        for path in sorted(d.glob("*.yaml")):
            if path.name == "kustomization.yaml" or path.name.endswith(".example.yaml"):
                continue
            if path.resolve() not in referenced:
                findings.error(str(path.relative_to(root)), f"not listed in {rel}/kustomization.yaml")
        findings.ok(f"{rel}/kustomization.yaml: {len(kust.get('resources') or [])} resources and {len(kust.get('patches') or [])} patches exist")
    return dirs


def render(root: Path, kdir: Path, findings: Findings) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        findings.error(str(kdir.relative_to(root)), "kubectl (with kustomize) is needed to render the kustomization; install it")
        return []
    done = subprocess.run([kubectl, "kustomize", str(kdir)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        findings.error(str(kdir.relative_to(root)), f"kubectl kustomize failed: {done.stderr.strip()}")
        return []
    return [d for d in yaml.safe_load_all(done.stdout) if d]


# ------------------------------------------------------------ deployments


def probe_problems(container: dict, probe: str, path: str) -> list[str]:
    spec = container.get(probe)
    if not spec:
        return [f"no {probe}"]
    get = spec.get("httpGet") or {}
    problems = []
    if get.get("path") != path:
        problems.append(f"{probe} must GET {path} (has {get.get('path')!r})")
    if get.get("port") not in ("metrics", METRICS_PORT):
        problems.append(f"{probe} must use the metrics port (has {get.get('port')!r})")
    return problems


def resolve_env(container: dict, configmaps: dict, secrets: dict, where: str, findings: Findings) -> dict[str, str]:
    """The container's environment as Kubernetes builds it; reports dangling references."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            if name not in configmaps:
                findings.error(where, f"envFrom ConfigMap {name} is not defined")
            env.update(configmaps.get(name, {}))
        if "secretRef" in source:
            name = source["secretRef"]["name"]
            if name not in secrets:
                findings.error(where, f"envFrom Secret {name} is neither defined nor templated")
            env.update({k: "<secret>" for k in secrets.get(name, ())})
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        for ref_kind, known in (("secretKeyRef", secrets), ("configMapKeyRef", configmaps)):
            ref = value_from.get(ref_kind)
            if ref and ref.get("key") not in known.get(ref.get("name"), ()):
                findings.error(where, f"env {var['name']}: {ref_kind} {ref.get('name')} has no key {ref.get('key')}")
        env[var["name"]] = str(var.get("value", "<ref>"))
    return env


def check_deployments(label: str, docs: list[dict], secret_templates: dict[str, set[str]], binaries: set[str], findings: Findings) -> list[str]:
    configmaps = {d["metadata"]["name"]: d.get("data") or {} for d in docs if d.get("kind") == "ConfigMap"}
    secrets = dict(secret_templates)
    for d in docs:
        if d.get("kind") == "Secret":
            secrets[d["metadata"]["name"]] = set(d.get("stringData") or {}) | set(d.get("data") or {})
    for d in docs:
        if d.get("kind") in ("StatefulSet", "DaemonSet", "Job"):
            for c in pod_containers(d):
                resolve_env(c, configmaps, secrets, f"{label} {d['kind']}/{d['metadata']['name']} container {c.get('name')}", findings)
    deployments = [d for d in docs if d.get("kind") == "Deployment"]
    if not deployments:
        findings.error(label, "no Deployments rendered")
    for dep in deployments:
        where = f"{label} Deployment/{dep['metadata']['name']}"
        template = dep["spec"]["template"]
        pod = template["spec"]
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        if annotations.get("prometheus.io/scrape") != "true" or annotations.get("prometheus.io/port") != str(METRICS_PORT):
            findings.error(where, f"pod template needs prometheus.io/scrape \"true\" and prometheus.io/port \"{METRICS_PORT}\"")
        if not (pod.get("securityContext") or {}).get("runAsNonRoot"):
            findings.error(where, "pod securityContext.runAsNonRoot must be true")
        grace_s = pod.get("terminationGracePeriodSeconds", 30)
        for c in pod.get("containers") or []:
            cwhere = f"{where} container {c.get('name')}"
            metrics = [p for p in c.get("ports") or [] if p.get("name") == "metrics"]
            if not metrics or metrics[0].get("containerPort") != METRICS_PORT:
                findings.error(cwhere, f"needs a port named metrics on {METRICS_PORT}")
            problems = probe_problems(c, "livenessProbe", LIVEZ) + probe_problems(c, "readinessProbe", READYZ)
            if "startupProbe" in c:
                problems += probe_problems(c, "startupProbe", LIVEZ)
            for problem in problems:
                findings.error(cwhere, problem)
            resources = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in (resources.get(kind) or {}):
                        findings.error(cwhere, f"resources.{kind}.{res} not set")
            command = c.get("command") or []
            if not command or command[0] not in binaries:
                findings.error(cwhere, f"command {command!r} does not start with a binary the image ships ({' '.join(sorted(binaries))})")
            env = resolve_env(c, configmaps, secrets, cwhere, findings)
            for needed in ("DEEPCUTS__STORE__URL", "DEEPCUTS__QUEUE__URL"):
                if needed not in env:
                    findings.error(cwhere, f"{needed} is not set")
            if env.get("DEEPCUTS__TELEMETRY__FORMAT") != "json":
                findings.error(cwhere, "DEEPCUTS__TELEMETRY__FORMAT must be json")
            drain_ms = int(env.get(DRAIN_VAR, DRAIN_DEFAULT_MS))
            if grace_s * 1000 <= drain_ms:
                findings.error(cwhere, f"terminationGracePeriodSeconds {grace_s} is not longer than the {drain_ms} ms drain")
    names = sorted(d["metadata"]["name"] for d in deployments)
    findings.ok(f"{label}: {len(deployments)} Deployments ({', '.join(names)}): probes on {LIVEZ} and {READYZ}, metrics port {METRICS_PORT}, "
                "scrape annotations, requests/limits, non-root, env refs resolve (StatefulSets too), JSON logs, grace period > drain")
    return names


def secret_templates(parsed: dict[Path, list]) -> dict[str, set[str]]:
    templates = {}
    for rel, docs in parsed.items():
        if rel.name.endswith(".example.yaml"):
            for d in docs:
                if isinstance(d, dict) and d.get("kind") == "Secret":
                    templates[d["metadata"]["name"]] = set(d.get("stringData") or {}) | set(d.get("data") or {})
    return templates


def check_extras(parsed: dict[Path, list], deployment_names: set[str], templates: dict[str, set[str]], findings: Findings) -> None:
    count = 0
    for rel, docs in parsed.items():
        if rel.parts[:2] != ("k8s", "extras"):
            continue
        for d in docs:
            count += 1
            kind, spec = d.get("kind"), d.get("spec") or {}
            target = (spec.get("scaleTargetRef") or {}).get("name")
            if kind in ("HorizontalPodAutoscaler", "ScaledObject") and target not in deployment_names:
                findings.error(str(rel), f"{kind} targets {target!r}, which is no Deployment in k8s/base")
            for ref in spec.get("secretTargetRef") or []:
                if ref.get("key") not in templates.get(ref.get("name"), ()):
                    findings.error(str(rel), f"secretTargetRef {ref.get('name')}/{ref.get('key')} is not in the Secret template")
    findings.ok(f"k8s/extras: {count} objects target existing Deployments and Secret keys")


# ---------------------------------------------------------------- compose


def parse_duration_s(text: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text)):
        total += float(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def check_compose(parsed: dict[Path, list], binaries: set[str], findings: Findings) -> None:
    rel = Path("deploy/docker-compose.yml")
    docs = parsed.get(rel)
    if not docs:
        findings.error(str(rel), "missing or empty")
        return
    services = docs[0].get("services") or {}
    ours = 0
    for name, svc in services.items():
        where = f"{rel} service {name}"
        depends = svc.get("depends_on") or {}
        for dep in depends:
            if dep not in services:
                findings.error(where, f"depends_on {dep}, which is not a service")
            elif isinstance(depends, dict) and (depends[dep] or {}).get("condition") == "service_healthy" and not services[dep].get("healthcheck"):
                findings.error(where, f"waits for {dep} to be healthy, but {dep} has no healthcheck")
        if not str(svc.get("image", "")).startswith("deepcuts"):
            continue
        ours += 1
        command = svc.get("command") or []
        if not command or command[0] not in binaries:
            findings.error(where, f"command {command!r} does not start with a binary the image ships")
        env = compose_env(svc)
        if env and DRAIN_VAR in env:
            grace = parse_duration_s(svc.get("stop_grace_period", "10s"))
            if grace * 1000 <= int(env[DRAIN_VAR]):
                findings.error(where, f"stop_grace_period {grace:g}s is not longer than the {env[DRAIN_VAR]} ms drain")
    findings.ok(f"{rel}: {len(services)} services, {ours} deepcuts services run shipped binaries, depends_on targets have healthchecks, grace > drain")


# ------------------------------------------------------------------- driver


def run_checks(root: Path, source_root: Path) -> Findings:
    findings = Findings()
    keys = ConfigKeys.load(source_root, findings)
    parsed = load_yaml_files(root, findings)
    binaries = dockerfile_binaries(root, findings)
    check_env_names(root, parsed, keys, findings)
    templates = secret_templates(parsed)
    base_deployments: set[str] = set()
    for kdir in check_kustomizations(root, findings):
        label = str(kdir.relative_to(root))
        docs = render(root, kdir, findings)
        if not docs:
            continue
        for doc in docs:
            for name in manifest_env_names(doc):
                if name.startswith(ENV_PREFIX):
                    keys.check(name, f"{label} (rendered)", findings)
        names = check_deployments(label, docs, templates, binaries, findings)
        if label == "k8s/base":
            base_deployments = set(names)
    check_extras(parsed, base_deployments, templates, findings)
    check_compose(parsed, binaries, findings)
    return findings


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    if old not in text:
        raise AssertionError(f"self-test fixture out of date: {old!r} not in {path}")
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


# Each fault, applied alone to a copy of deploy/ and k8s/, must be reported
# with a message containing the expected text.
FAULTS = [
    ("readiness probe removed", "k8s/base/transcoder.yaml", "readinessProbe:", "notAProbe:", "no readinessProbe"),
    ("liveness path wrong", "k8s/base/indexer.yaml", "livenessProbe:\n            httpGet:\n              path: /health/livez",
     "livenessProbe:\n            httpGet:\n              path: /healthz", "livenessProbe must GET /health/livez"),
    ("metrics port renamed", "k8s/base/scraper.yaml", "- name: metrics", "- name: prom", "port named metrics"),
    ("unknown section", "k8s/base/configmap.yaml", "DEEPCUTS__STORE__URL", "DEEPCUTS__STOR__URL", "unknown section 'stor'"),
    ("unknown key", "deploy/docker-compose.yml", "DEEPCUTS__WORKER__CONCURRENCY", "DEEPCUTS__WORKER__CONCURENCY", "unknown key 'concurency'"),
    ("drain longer than grace", "k8s/base/configmap.yaml", 'DRAIN_TIMEOUT_MS: "60000"', 'DRAIN_TIMEOUT_MS: "95000"', "not longer than the 95000 ms drain"),
    ("missing resource", "k8s/base/kustomization.yaml", "  - server.yaml\n", "  - server.yaml\n  - gone.yaml\n", "resource gone.yaml does not exist"),
    ("broken YAML", "k8s/overlays/dev/rabbitmq.yaml", "  selector:\n", "  selector: [\n", "YAML does not parse"),
    ("binary not shipped", "k8s/base/coordinator.yaml", '"deepcuts-coordinator"', '"deepcuts-coordinater"', "does not start with a binary"),
    ("secret key missing", "k8s/overlays/dev/seaweedfs.yaml", "key: AWS_SECRET_ACCESS_KEY", "key: AWS_SECRET", "has no key AWS_SECRET"),
    ("startup probe path wrong", "k8s/base/embedder.yaml", "startupProbe:\n            httpGet:\n              path: /health/livez",
     "startupProbe:\n            httpGet:\n              path: /", "startupProbe must GET /health/livez"),
]


def self_test(root: Path) -> int:
    failures = 0
    with tempfile.TemporaryDirectory(prefix="deepcuts-deploy-selftest-") as tmp:
        for label, rel, old, new, expected in [("unchanged copy", None, "", "", None)] + FAULTS:
            copy = Path(tmp) / "root"
            shutil.rmtree(copy, ignore_errors=True)
            for d in ("deploy", "k8s"):
                shutil.copytree(root / d, copy / d)
            if rel is not None:
                edit(copy / rel, old, new)
            errors = run_checks(copy, root).errors
            if expected is None:
                good = not errors
            else:
                good = any(expected in e for e in errors)
            failures += not good
            print(f"  {'ok  ' if good else 'FAIL'} {label}" + ("" if good else f": got {errors or 'no errors'}"))
    print(f"self-test: {len(FAULTS) + 1 - failures}/{len(FAULTS) + 1} cases behaved")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, required=True, help="repository root")
    parser.add_argument("--self-test", action="store_true", help="assert that planted faults are caught")
    args = parser.parse_args()
    root = args.root.resolve()
    if args.self_test:
        return self_test(root)
    findings = run_checks(root, root)
    for line in findings.checked:
        print(f"checked: {line}")
    for line in findings.errors:
        print(f"ERROR: {line}")
    print(f"{len(findings.errors)} problem(s)")
    return 1 if findings.errors else 0


if __name__ == "__main__":
    sys.exit(main())
