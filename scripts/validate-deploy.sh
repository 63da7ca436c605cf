#!/usr/bin/env bash
# Validates every manifest under deploy/ (but deploy/tests/): Kubernetes objects against the
# Kubernetes JSON schemas bundled in kubernetes-validate, strict (an unknown field fails), for
# the oldest and newest Kubernetes versions the manifests support; KEDA objects against
# deploy/schemas/ (KEDA's CRDs are not in those schemas); kustomization.yaml lists exactly the
# manifests beside it; the TOML in ConfigMaps parses. Then every file in deploy/tests/invalid/
# must be refused, for the reason its first line names. Works offline once kubernetes-validate
# is in .venv (installed here like scripts/ensure-moto.sh installs moto; the schemas ship in
# the package). Exit 0 when all of that holds, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
KUBERNETES_VALIDATE_VERSION="1.34.1"
# Native sidecars (restartPolicy on an init container) need 1.29; 1.34 is the newest bundled.
KUBERNETES_VERSIONS="${KUBERNETES_VERSIONS:-1.29.0 1.34.0}"

if ! .venv/bin/python -c "import kubernetes_validate, sys; sys.exit(kubernetes_validate.__version__ != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  echo "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .venv" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

KUBERNETES_VERSIONS="$KUBERNETES_VERSIONS" exec .venv/bin/python - <<'PY'
import json, os, pathlib, sys, tomllib

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import ValidationError, SchemaNotFoundError

DEPLOY = pathlib.Path("deploy")
VERSIONS = os.environ["KUBERNETES_VERSIONS"].split()
KEDA = {
    "ScaledObject": "keda-scaledobject.schema.json",
    "TriggerAuthentication": "keda-triggerauthentication.schema.json",
}
KUSTOMIZATION_KEYS = {"apiVersion", "kind", "namespace", "resources", "images", "labels",
                      "commonLabels", "patches", "configMapGenerator", "secretGenerator"}


def keda_validator(kind):
    schema = json.loads((DEPLOY / "schemas" / KEDA[kind]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def problems(path, doc):
    """Why `doc` (one YAML document of `path`) is invalid; empty when it is valid."""
    if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
        return ["not a Kubernetes object (no kind or apiVersion)"]
    kind, api = doc["kind"], doc["apiVersion"]
    if kind == "Kustomization":
        found = []
        extra = set(doc) - KUSTOMIZATION_KEYS
        if extra:
            found.append(f"unknown kustomization keys {sorted(extra)}")
        listed = set(doc.get("resources", []))
        beside = {p.name for p in path.parent.glob("*.yaml") if p.name != path.name}
        for missing in sorted(listed - beside):
            found.append(f"resources lists {missing}, which does not exist")
        for unlisted in sorted(beside - listed):
            found.append(f"{unlisted} is not in resources")
        return found
    if api.startswith("keda.sh/"):
        if kind not in KEDA:
            return [f"no schema for KEDA kind {kind}"]
        errors = sorted(keda_validator(kind).iter_errors(doc), key=lambda e: list(e.path))
        return [f"{'.'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in errors]
    found = []
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except ValidationError as e:
            where = ".".join(map(str, e.path))
            found.append(f"Kubernetes {version}: {where}: {e.message}")
        except SchemaNotFoundError as e:
            found.append(f"Kubernetes {version}: {e.message}")
    if kind == "ConfigMap":
        for key, text in (doc.get("data") or {}).items():
            if key.endswith(".toml"):
                try:
                    tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    found.append(f"data.{key}: not TOML: {e}")
    return found


def documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def name_of(doc):
    if isinstance(doc, dict):
        return f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '-')}"
    return "?"


failed = 0
manifests = sorted(p for p in DEPLOY.rglob("*.y*ml")
                   if p.suffix in (".yaml", ".yml") and "tests" not in p.relative_to(DEPLOY).parts)
objects = 0
for path in manifests:
    for doc in documents(path):
        objects += 1
        found = problems(path, doc)
        if found:
            failed += 1
            for p in found:
                print(f"FAIL {path} {name_of(doc)}: {p}")
        else:
            print(f"ok   {path} {name_of(doc)}")

# The check must bite: each fixture must be refused, for the reason it names.
fixtures = sorted((DEPLOY / "tests" / "invalid").glob("*.yaml"))
for path in fixtures:
    first = path.read_text().splitlines()[0]
    expect = first.removeprefix("# expect:").strip()
    if not first.startswith("# expect:") or not expect:
        print(f"FAIL {path}: first line must be '# expect: TEXT'")
        failed += 1
        continue
    found = [p for doc in documents(path) for p in problems(path, doc)]
    if any(expect in p for p in found):
        print(f"ok   {path} refused: {next(p for p in found if expect in p)}")
    else:
        failed += 1
        print(f"FAIL {path}: expected a refusal naming {expect!r}, got {found or 'none'}")

if not manifests or not fixtures:
    print("FAIL nothing to validate under deploy/")
    failed += 1
print(f"validate-deploy: {objects} objects in {len(manifests)} manifests, "
      f"{len(fixtures)} invalid fixtures, Kubernetes {', '.join(VERSIONS)}: "
      f"{'all good' if failed == 0 else f'{failed} problems'}")
sys.exit(1 if failed else 0)
PY
