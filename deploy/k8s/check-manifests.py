#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in this folder (no cluster needed).

  python3 deploy/k8s/check-manifests.py            # every *.yaml beside this script
  python3 deploy/k8s/check-manifests.py FILE...

1. Every file parses as YAML (PyYAML) and every document has apiVersion, kind, metadata.name.
2. With the Kubernetes Python client installed (Debian: python3-kubernetes), every field is
   checked against the API's types: unknown field names (a typo is silently dropped by
   `kubectl apply`), a scalar where an object or a list belongs and the reverse, and required
   fields (deserializing into the client's models, which refuse a missing required field).
3. Cross-references: a workload's selector matches its pod template's labels; the Service
   selects the coordinator pods and its targetPort names a port they declare; probes name
   declared ports; every volumeMount names a volume of its pod; containers run ferry.
4. Task libraries: the coordinator's --tasks come before its command (they are global
   options); a volume mounted where --tasks points is read-only; and coordinators and workers
   run the same image with the same --tasks, so both sides load the same libraries (a task is
   only routed to workers whose library has the same signature for it).
Exit status 0 if all checks pass, 1 otherwise.
"""
import glob
import json
import os
import sys

import yaml

try:
    import kubernetes.client as k8s
    from kubernetes.client import ApiClient
except ImportError:  # structural checks are skipped, and said to be
    k8s = None

PRIMITIVES = {"str", "int", "bool", "float", "object", "datetime", "date"}
KINDS = {
    ("v1", "Service"): "V1Service",
    ("v1", "ConfigMap"): "V1ConfigMap",
    ("v1", "Secret"): "V1Secret",
    ("apps/v1", "Deployment"): "V1Deployment",
    ("batch/v1", "Job"): "V1Job",
}
errors = []


def error(where, msg):
    errors.append(f"{where}: {msg}")


def check_type(value, type_name, where):
    """Walks value against the client's type name (e.g. 'V1PodSpec', 'list[V1Container]')."""
    if type_name.startswith("list["):
        if not isinstance(value, list):
            return error(where, f"expected a list ({type_name}), got {type(value).__name__}")
        for i, item in enumerate(value):
            check_type(item, type_name[5:-1], f"{where}[{i}]")
        return
    if type_name.startswith("dict("):
        if not isinstance(value, dict):
            return error(where, f"expected a map ({type_name}), got {type(value).__name__}")
        inner = type_name[5:-1].split(", ", 1)[1]
        for k, v in value.items():
            check_type(v, inner, f"{where}.{k}")
        return
    if type_name in PRIMITIVES:
        ok = {
            "str": (str, int, float),  # quantities such as cpu: 2 are numbers in YAML
            "int": (int,),
            "bool": (bool,),
            "float": (int, float),
        }.get(type_name, (object,))
        if isinstance(value, (dict, list)) and type_name != "object":
            error(where, f"expected {type_name}, got {type(value).__name__}")
        elif not isinstance(value, ok) or (type_name == "int" and isinstance(value, bool)):
            error(where, f"expected {type_name}, got {type(value).__name__} {value!r}")
        return
    model = getattr(k8s, type_name, None)
    if model is None:
        return
    if not isinstance(value, dict):
        return error(where, f"expected an object ({type_name}), got {type(value).__name__}")
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, v in value.items():
        if key not in by_json:
            error(where, f"unknown field '{key}' of {type_name}")
        else:
            check_type(v, model.openapi_types[by_json[key]], f"{where}.{key}")


def pod_specs(doc):
    kind = doc.get("kind")
    if kind in ("Deployment", "Job"):
        return [doc.get("spec", {}).get("template", {})]
    return []


COMMANDS = {"map", "demo", "tasks", "keygen", "cleanup", "status"}


def option_values(argv, name):
    """(index, value) of each --name=VALUE or --name VALUE in argv."""
    out = []
    for i, a in enumerate(argv):
        a = str(a)
        if a.startswith(name + "="):
            out.append((i, a[len(name) + 1 :]))
        elif a == name and i + 1 < len(argv):
            out.append((i, str(argv[i + 1])))
    return out


def check_tasks(c, cwhere, argv, volumes, roles):
    """Check 4 for one container running ferry; records what it loads in roles."""
    if not argv or argv[0] not in ("ferry-coordinator", "ferry-worker"):
        return
    tasks = option_values(argv, "--tasks")
    sources = []  # the volumes the libraries come from, if not from the image
    if argv[0] == "ferry-coordinator":
        command = next((i for i, a in enumerate(argv) if a in COMMANDS), len(argv))
        for i, path in tasks:
            if i > command:
                error(cwhere, f"--tasks {path} comes after the command '{argv[command]}': "
                      "it is a global option and goes before it")
    for _, path in tasks:
        for m in c.get("volumeMounts", []) or []:
            mount = str(m.get("mountPath", "")).rstrip("/")
            if not mount or not (path == mount or path.startswith(mount + "/")):
                continue
            if not m.get("readOnly"):
                error(cwhere, f"volume '{m.get('name')}' at {mount} holds the task libraries "
                      "(--tasks) and is writable: mount it readOnly")
            source = {k: v for k, v in volumes.get(m.get("name"), {}).items() if k != "name"}
            sources.append(json.dumps(source, sort_keys=True))
    role = "coordinator" if argv[0] == "ferry-coordinator" else "worker"
    loads = (c.get("image"), tuple(sorted(p for _, p in tasks)), tuple(sorted(sources)))
    roles[role].append((cwhere, loads))


def check_same_libraries(roles):
    """Every coordinator and every worker loads the same task libraries from the same image."""
    def said(loads):
        image, tasks, sources = loads
        return f"{image} with --tasks {list(tasks)}" + (f" from {list(sources)}" if sources else "")

    for cwhere, loads in roles["coordinator"]:
        for wwhere, wloads in roles["worker"]:
            if loads != wloads:
                error(cwhere, f"runs {said(loads)}, but {wwhere} runs {said(wloads)}: "
                      "coordinator and workers must load the same task libraries")


def check_references(docs, where_of):
    services = [d for d in docs if d.get("kind") == "Service"]
    roles = {"coordinator": [], "worker": []}
    for doc in docs:
        where = where_of[id(doc)]
        for template in pod_specs(doc):
            labels = template.get("metadata", {}).get("labels", {}) or {}
            spec = template.get("spec", {}) or {}
            selector = (doc["spec"].get("selector") or {}).get("matchLabels")
            if doc["kind"] == "Deployment":
                if not selector:
                    error(where, "a Deployment needs spec.selector.matchLabels")
                elif any(labels.get(k) != v for k, v in selector.items()):
                    error(where, f"selector {selector} does not match template labels {labels}")
            volumes = {v["name"] for v in spec.get("volumes", []) or []}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                cwhere = f"{where} container {c.get('name')}"
                ports = {p.get("name") for p in c.get("ports", []) or []}
                for m in c.get("volumeMounts", []) or []:
                    if m.get("name") not in volumes:
                        error(cwhere, f"volumeMount '{m.get('name')}' names no volume of the pod")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = ((c.get(probe) or {}).get("tcpSocket") or {}).get("port")
                    if isinstance(port, str) and port not in ports:
                        error(cwhere, f"{probe} names port '{port}' that is not declared")
                argv = (c.get("command") or []) + (c.get("args") or [])
                if c in (spec.get("containers") or []):
                    if not argv or argv[0] not in ("ferry-coordinator", "ferry-worker"):
                        error(cwhere, f"runs {argv[:1]}, not ferry-coordinator or ferry-worker")
                    pod_volumes = {v["name"]: v for v in spec.get("volumes", []) or []}
                    check_tasks(c, cwhere, argv, pod_volumes, roles)
            if labels.get("app.kubernetes.io/component") == "coordinator":
                for svc in services:
                    sel = svc["spec"].get("selector", {})
                    if any(labels.get(k) != v for k, v in sel.items()):
                        error(where, f"Service {svc['metadata']['name']} does not select it")
                    declared = {
                        p.get("name")
                        for c in spec.get("containers", [])
                        for p in c.get("ports", []) or []
                    }
                    for p in svc["spec"].get("ports", []):
                        tp = p.get("targetPort")
                        if isinstance(tp, str) and tp not in declared:
                            error(where, f"Service targetPort '{tp}' is not a declared port")
    check_same_libraries(roles)


def main(paths):
    api = ApiClient() if k8s else None
    docs, where_of = [], {}
    for path in paths:
        with open(path, encoding="utf-8") as f:
            try:
                loaded = [d for d in yaml.safe_load_all(f) if d is not None]
            except yaml.YAMLError as e:
                error(path, f"YAML: {e}")
                continue
        for i, doc in enumerate(loaded):
            where = f"{os.path.basename(path)}#{i} {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for field in ("apiVersion", "kind", "metadata"):
                if field not in doc:
                    error(where, f"missing {field}")
            if not (doc.get("metadata") or {}).get("name"):
                error(where, "missing metadata.name")
            type_name = KINDS.get((doc.get("apiVersion"), doc.get("kind")))
            if type_name is None:
                error(where, f"kind {doc.get('apiVersion')}/{doc.get('kind')} not checked here")
            elif k8s:
                check_type(doc, type_name, where)
                try:  # the models raise ValueError for a missing required field
                    api._ApiClient__deserialize(doc, type_name)
                except (ValueError, TypeError) as e:
                    error(where, f"{type_name}: {e}")
            docs.append(doc)
            where_of[id(doc)] = where
    check_references(docs, where_of)
    for e in errors:
        print("error:", e)
    schema = "API types of kubernetes client " + k8s_version() if k8s else "no API types (install python3-kubernetes)"
    print(f"{len(docs)} documents in {len(paths)} files; {schema}; {len(errors)} errors")
    return 1 if errors else 0


def k8s_version():
    import kubernetes

    return kubernetes.__version__


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    files = sys.argv[1:] or sorted(glob.glob(os.path.join(here, "*.yaml")))
    sys.exit(main(files))
