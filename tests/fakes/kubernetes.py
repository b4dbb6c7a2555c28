"""A fake Kubernetes API server for Cordon's tests (Python 3.11, standard library + kubernetes-validate).

It follows the Kubernetes 1.30 API reference (https://kubernetes.io/docs/reference/generated/kubernetes-api/v1.30/)
for the resources Cordon's `kubernetes` integration uses:

    core/v1       pods (get, list, patch, update, delete), pods/log, pods/eviction (create),
                  nodes (get, list, patch, update), events (list), namespaces (get)
    apps/v1       deployments, statefulsets, replicasets, daemonsets (get, list, patch, update),
                  deployments/scale, statefulsets/scale (get, update, patch)
    networking.k8s.io/v1  networkpolicies (get, list, create, update, patch, delete)

What it checks the way an API server does: bearer tokens and client certificates (401 without
either), RBAC refusals injected per verb and resource (403 with the API server's message),
`metadata.resourceVersion` on updates (409 Conflict), 404 NotFound, 409 AlreadyExists, unsupported
patch types (415), and a `Status` object in every error answer. Every object Cordon sends (a
create, an update, an eviction, delete options, and the result of every patch) is validated with
`kubernetes_validate.validate(obj, "1.30", strict=True)`, the official JSON schemas of Kubernetes
1.30 (kubernetes-validate 1.37.0); an invalid one is answered 422 Invalid and recorded under
`/_fake/failures`, so a test can assert there were none.

Control endpoints, for the tests only (no auth; the fake binds 127.0.0.1):

    POST /_fake/seed        {"objects": [...]}    stores objects as they are (validated too)
    GET  /_fake/object?path=/api/v1/namespaces/default/pods/web   an object, or 404
    GET  /_fake/requests    every API request: method, path, query, content_type, body, status, user
    GET  /_fake/failures    objects that failed schema validation
    POST /_fake/tokens      {"tokens": [...]}     the bearer tokens accepted (replaces the list)
    POST /_fake/forbid      {"verb": "patch", "resource": "pods"}   answer 403 to that verb
    POST /_fake/inject      {"verb": "put", "resource": "deployments/scale", "status": 409, "count": 1}
    POST /_fake/logs        {"namespace", "pod", "container", "previous": bool, "text"}
    POST /_fake/pdb_block   {"namespace", "pod"}  evictions of that pod answer 429 (a disruption budget)
    POST /_fake/reset       forget everything

Run: python kubernetes.py [--tls-cert F --tls-key F --client-ca F]; it prints its port on stdout.
"""

import argparse
import copy
import json
import re
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils as kv_utils
from referencing import Registry, Resource

SCHEMA_VERSION = "1.30"

# resource -> (group/version prefix, kind, namespaced)
RESOURCES = {
    ("", "pods"): ("v1", "Pod", True),
    ("", "nodes"): ("v1", "Node", False),
    ("", "events"): ("v1", "Event", True),
    ("", "namespaces"): ("v1", "Namespace", False),
    ("apps", "deployments"): ("apps/v1", "Deployment", True),
    ("apps", "statefulsets"): ("apps/v1", "StatefulSet", True),
    ("apps", "replicasets"): ("apps/v1", "ReplicaSet", True),
    ("apps", "daemonsets"): ("apps/v1", "DaemonSet", True),
    ("networking.k8s.io", "networkpolicies"): ("networking.k8s.io/v1", "NetworkPolicy", True),
}
KIND_TO_RESOURCE = {kind: (group, res) for (group, res), (_, kind, _) in RESOURCES.items()}

PATCH_TYPES = (
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/json-patch+json",
)


class State:
    def __init__(self):
        self.lock = threading.RLock()
        self.reset()

    def reset(self):
        self.objects = {}  # (group, resource, namespace or "", name) -> object
        self.version = 1000
        self.requests = []
        self.failures = []
        self.tokens = set()
        self.forbidden = set()  # (verb, resource)
        self.injected = []  # {verb, resource, status, count}
        self.logs = {}  # (ns, pod, container, previous) -> text
        self.pdb_blocked = set()  # (ns, pod)

    def next_version(self):
        self.version += 1
        return str(self.version)


STATE = State()


def status(code, reason, message, details=None):
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 300 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return code, body


def validate_delete_options(obj):
    # kubernetes-validate maps apiVersion `v1` to no file for DeleteOptions (it lives in meta/v1);
    # the same schema file is used directly, as kubernetes_validate.validate would.
    schema_dir = "v%s.0-local-strict" % SCHEMA_VERSION
    schema = kv_utils.schema_contents("kubernetes-json-schema/%s/deleteoptions-meta-v1.json" % schema_dir, SCHEMA_VERSION)
    defs = kv_utils.schema_contents("kubernetes-json-schema/%s/_definitions.json" % schema_dir, SCHEMA_VERSION)
    registry = Resource.from_contents(defs) @ (Resource.from_contents(schema) @ Registry())
    jsonschema.validators.Draft202012Validator(schema, registry=registry).validate(obj)


def check_schema(obj, what):
    """None when `obj` is valid against the 1.30 schemas; else the 422 answer (and a recorded failure)."""
    try:
        if isinstance(obj, dict) and obj.get("kind") == "DeleteOptions":
            validate_delete_options(obj)
        else:
            kubernetes_validate.validate(obj, SCHEMA_VERSION, strict=True)
        return None
    except Exception as e:  # ValidationError, SchemaNotFoundError, KeyError on a missing kind
        message = getattr(e, "message", None) or str(e)
        path = ".".join(str(p) for p in getattr(e, "path", []) or [])
        text = "%s is invalid: %s%s" % (what, (path + ": ") if path else "", message)
        STATE.failures.append({"what": what, "error": text, "object": obj})
        return status(422, "Invalid", text)


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch. Cordon's patches touch maps only (labels, annotations,
    spec.unschedulable, spec.replicas), where a strategic merge patch merges the same way."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_pointer_parts(path):
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(target, ops):
    """RFC 6902, the operations add, remove, replace and test."""
    doc = copy.deepcopy(target)
    for op in ops:
        parts = json_pointer_parts(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise ValueError("test operation failed at %s" % op["path"])
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                parent.insert(int(last), op["value"]) if kind == "add" else parent.__setitem__(int(last), op["value"])
            else:
                if kind == "replace" and last not in parent:
                    raise ValueError("replace of a missing path %s" % op["path"])
                parent[last] = op["value"]
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                if last not in parent:
                    raise ValueError("remove of a missing path %s" % op["path"])
                del parent[last]
        else:
            raise ValueError("unsupported operation %s" % kind)
    return doc


def matches_labels(obj, selector):
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            k = k.rstrip("=")
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_value(obj, dotted):
    value = obj
    for part in dotted.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def matches_fields(obj, selector):
    for term in filter(None, (selector or "").split(",")):
        negate = "!=" in term
        k, v = term.split("!=" if negate else "=", 1)
        k = k.rstrip("=")
        actual = field_value(obj, k)
        actual = "" if actual is None else str(actual)
        if (actual == v) == negate:
            return False
    return True


class Route:
    """A parsed API path."""

    def __init__(self, group, version, resource, namespace, name, sub):
        self.group, self.version, self.resource = group, version, resource
        self.namespace, self.name, self.sub = namespace, name, sub

    @property
    def rbac_resource(self):
        return self.resource + ("/" + self.sub if self.sub else "")


def parse_path(path):
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) == 2 and rest[0] == "namespaces":
        return Route(group, version, "namespaces", None, rest[1], None)
    if not rest or len(rest) > 3:
        return None
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if (group, resource) not in RESOURCES:
        return None
    expected_version = RESOURCES[(group, resource)][0].split("/")[-1]
    if version != expected_version:
        return None
    return Route(group, version, resource, namespace, name, sub)


def key_of(route, name=None):
    return (route.group, route.resource, route.namespace or "", name or route.name)


def store_object(group, resource, obj, fresh=True):
    meta = obj.setdefault("metadata", {})
    if fresh:
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    meta["resourceVersion"] = STATE.next_version()
    STATE.objects[(group, resource, meta.get("namespace", "") if RESOURCES[(group, resource)][2] else "", meta["name"])] = obj
    return obj


def forbidden_message(user, verb, route):
    group = route.group or '""'
    text = 'User "%s" cannot %s resource "%s" in API group "%s"' % (
        user, verb, route.rbac_resource, route.group)
    if route.namespace:
        text += ' in the namespace "%s"' % route.namespace
    else:
        text += " at the cluster scope"
    what = '%s "%s"' % (route.rbac_resource, route.name) if route.name else route.rbac_resource
    del group
    return "%s is forbidden: %s" % (what, text)


def verb_of(method, route):
    if method == "GET":
        if route.sub == "log":
            return "get"
        return "get" if route.name else "list"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, method.lower())


def scale_of(obj):
    meta = obj["metadata"]
    selector = ",".join("%s=%s" % kv for kv in sorted(((obj.get("spec") or {}).get("selector") or {}).get("matchLabels", {}).items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta["resourceVersion"],
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": selector},
    }


def handle_api(method, route, query, content_type, body, user):
    resource_key = (route.group, route.resource)
    api_version, kind, namespaced = RESOURCES[resource_key]
    verb = verb_of(method, route)
    with STATE.lock:
        for rule in STATE.injected:
            if rule["count"] > 0 and rule["verb"] == verb and rule["resource"] == route.rbac_resource:
                rule["count"] -= 1
                code = rule["status"]
                if code == 409:
                    return status(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your changes to the latest version and try again' % (route.rbac_resource, route.name))
                return status(code, "InternalError" if code >= 500 else "TooManyRequests", "injected failure %d" % code)
        if (verb, route.rbac_resource) in STATE.forbidden or (verb, "*") in STATE.forbidden:
            return status(403, "Forbidden", forbidden_message(user, verb, route),
                          {"name": route.name, "kind": route.resource})

        if route.resource == "namespaces":
            if method != "GET" or not route.name:
                return status(405, "MethodNotAllowed", "the fake serves GET of one namespace only")
            obj = STATE.objects.get(("", "namespaces", "", route.name))
            if obj is None:
                obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": route.name}}
                if not any(k[2] == route.name for k in STATE.objects):
                    return status(404, "NotFound", 'namespaces "%s" not found' % route.name,
                                  {"name": route.name, "kind": "namespaces"})
            return 200, obj

        # Lists
        if method == "GET" and not route.name:
            items = []
            for (g, r, ns, _), obj in sorted(STATE.objects.items()):
                if (g, r) != resource_key:
                    continue
                if route.namespace and ns != route.namespace:
                    continue
                if not matches_labels(obj, query.get("labelSelector")):
                    continue
                if not matches_fields(obj, query.get("fieldSelector")):
                    continue
                items.append(obj)
            return 200, {
                "kind": kind + "List",
                "apiVersion": api_version,
                "metadata": {"resourceVersion": str(STATE.version)},
                "items": items,
            }

        if method == "POST" and not route.name:
            if not isinstance(body, dict):
                return status(400, "BadRequest", "the request body is not a JSON object")
            invalid = check_schema(body, "%s %s" % (kind, (body.get("metadata") or {}).get("name")))
            if invalid:
                return invalid
            if body.get("kind") != kind or body.get("apiVersion") != api_version:
                return status(400, "BadRequest", "the body is a %s %s, not a %s %s" % (body.get("apiVersion"), body.get("kind"), api_version, kind))
            meta = body.get("metadata") or {}
            if namespaced and meta.get("namespace") not in (None, route.namespace):
                return status(400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request")
            if namespaced:
                meta["namespace"] = route.namespace
            if not meta.get("name"):
                return status(422, "Invalid", "%s is invalid: metadata.name: Required value" % kind)
            if "resourceVersion" in meta:
                return status(422, "Invalid", "metadata.resourceVersion: Invalid value: must be empty on create")
            if key_of(route, meta["name"]) in STATE.objects:
                return status(409, "AlreadyExists", '%s "%s" already exists' % (route.resource, meta["name"]),
                              {"name": meta["name"], "kind": route.resource})
            return 201, store_object(route.group, route.resource, copy.deepcopy(body))

        obj = STATE.objects.get(key_of(route))
        if obj is None:
            return status(404, "NotFound", '%s "%s" not found' % (route.resource, route.name),
                          {"name": route.name, "kind": route.resource})

        if route.sub == "log":
            return handle_log(route, query, obj)
        if route.sub == "eviction":
            return handle_eviction(route, body, obj)
        if route.sub == "scale":
            return handle_scale(method, route, content_type, body, obj)
        if route.sub == "status":
            return status(405, "MethodNotAllowed", "the fake does not serve status subresources")
        if route.sub:
            return status(404, "NotFound", "the server could not find the requested resource")

        if method == "GET":
            return 200, obj
        if method == "DELETE":
            if isinstance(body, dict):
                invalid = check_schema(body, "DeleteOptions")
                if invalid:
                    return invalid
                want = (body.get("preconditions") or {}).get("uid")
                if want and want != obj["metadata"].get("uid"):
                    return status(409, "Conflict", 'Precondition failed: UID in precondition: %s, UID in object meta: %s' % (want, obj["metadata"].get("uid")))
            del STATE.objects[key_of(route)]
            return 200, obj
        if method == "PUT":
            if not isinstance(body, dict):
                return status(400, "BadRequest", "the request body is not a JSON object")
            sent = (body.get("metadata") or {}).get("resourceVersion")
            if not sent:
                return status(422, "Invalid", '%s "%s" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update' % (kind, route.name))
            if sent != obj["metadata"]["resourceVersion"]:
                return status(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your changes to the latest version and try again' % (route.resource, route.name))
            invalid = check_schema(body, "%s %s" % (kind, route.name))
            if invalid:
                return invalid
            updated = copy.deepcopy(body)
            for keep in ("uid", "creationTimestamp"):
                if keep in obj["metadata"]:
                    updated["metadata"][keep] = obj["metadata"][keep]
            return 200, store_object(route.group, route.resource, updated, fresh=False)
        if method == "PATCH":
            return apply_patch(route, content_type, body, obj, kind, lambda patched: store_object(route.group, route.resource, patched, fresh=False))
        return status(405, "MethodNotAllowed", "method %s is not supported" % method)


def apply_patch(route, content_type, body, obj, kind, save):
    if content_type not in PATCH_TYPES:
        return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format - accepted media types include: %s, application/apply-patch+yaml" % ", ".join(PATCH_TYPES))
    try:
        if content_type == "application/json-patch+json":
            patched = json_patch(obj, body)
        else:
            if not isinstance(body, dict):
                return status(400, "BadRequest", "a merge patch must be a JSON object")
            patched = merge_patch(obj, body)
    except (ValueError, KeyError, IndexError, TypeError) as e:
        return status(422, "Invalid", "the patch could not be applied: %s" % e)
    sent = (body.get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
    if sent and sent != obj["metadata"]["resourceVersion"]:
        return status(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; please apply your changes to the latest version and try again' % (route.rbac_resource, route.name))
    for fixed in ("name", "namespace", "uid"):
        if patched.get("metadata", {}).get(fixed) != obj["metadata"].get(fixed):
            return status(422, "Invalid", "metadata.%s: field is immutable" % fixed)
    invalid = check_schema(patched, "%s %s (after the patch)" % (kind, route.name))
    if invalid:
        return invalid
    return 200, save(patched)


def handle_log(route, query, pod):
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers", [])]
    every = containers + [c["name"] for c in (pod.get("spec") or {}).get("initContainers", [])]
    container = query.get("container")
    if not container:
        if len(containers) != 1:
            return status(400, "BadRequest", "a container name must be specified for pod %s, choose one of: [%s]" % (route.name, " ".join(containers)))
        container = containers[0]
    if container not in every:
        return status(400, "BadRequest", "container %s is not valid for pod %s" % (container, route.name))
    previous = query.get("previous") == "true"
    text = STATE.logs.get((route.namespace, route.name, container, previous))
    if text is None:
        if previous:
            return status(400, "BadRequest", 'previous terminated container "%s" in pod "%s" not found' % (container, route.name))
        text = ""
    data = text.encode()
    if query.get("limitBytes"):
        data = data[: int(query["limitBytes"])]
    return 200, ("text/plain", data)


def handle_eviction(route, body, pod):
    if not isinstance(body, dict):
        return status(400, "BadRequest", "the request body is not a JSON object")
    invalid = check_schema(body, "Eviction %s" % route.name)
    if invalid:
        return invalid
    meta = body.get("metadata") or {}
    if meta.get("name") != route.name or meta.get("namespace", route.namespace) != route.namespace:
        return status(400, "BadRequest", "name in URL does not match name in Eviction object")
    if (route.namespace, route.name) in STATE.pdb_blocked:
        return status(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.",
                      {"causes": [{"reason": "DisruptionBudget", "message": "The disruption budget web-pdb needs 1 healthy pods and has 1 currently"}]})
    del STATE.objects[key_of(route)]
    return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


def handle_scale(method, route, content_type, body, obj):
    if route.resource not in ("deployments", "statefulsets", "replicasets"):
        return status(404, "NotFound", "the server could not find the requested resource")
    current = scale_of(obj)
    if method == "GET":
        return 200, current

    def save(scale):
        invalid = check_schema(scale, "Scale %s" % route.name)
        if invalid:
            return invalid
        updated = copy.deepcopy(obj)
        updated.setdefault("spec", {})["replicas"] = scale["spec"]["replicas"]
        store_object(route.group, route.resource, updated, fresh=False)
        return 200, scale_of(updated)

    if method == "PUT":
        if not isinstance(body, dict):
            return status(400, "BadRequest", "the request body is not a JSON object")
        sent = (body.get("metadata") or {}).get("resourceVersion")
        if sent and sent != obj["metadata"]["resourceVersion"]:
            return status(409, "Conflict", 'Operation cannot be fulfilled on %s.apps "%s": the object has been modified; please apply your changes to the latest version and try again' % (route.resource, route.name))
        return save(body)
    if method == "PATCH":
        code, answer = apply_patch(route, content_type, body, current, "Scale", lambda patched: patched)
        if code != 200:
            return code, answer
        return save(answer)
    return status(405, "MethodNotAllowed", "method %s is not supported on scale" % method)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, code, body):
        if isinstance(body, tuple):
            content_type, data = body
        else:
            content_type, data = "application/json", json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        return raw

    def user(self):
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            token = auth[len("Bearer "):]
            with STATE.lock:
                if token in STATE.tokens:
                    return "system:serviceaccount:cordon:cordon-responder"
            return None
        cert = None
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError):
            pass
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        return value
        return None

    def control(self, method, path, query, raw):
        body = json.loads(raw) if raw else {}
        with STATE.lock:
            if path == "/_fake/seed" and method == "POST":
                for obj in body["objects"]:
                    invalid = check_schema(obj, "seeded %s" % obj.get("kind"))
                    if invalid:
                        STATE.failures.pop()
                        return invalid
                    group, resource = KIND_TO_RESOURCE[obj["kind"]]
                    store_object(group, resource, copy.deepcopy(obj))
                return 200, {"ok": True}
            if path == "/_fake/object" and method == "GET":
                route = parse_path(query["path"])
                obj = STATE.objects.get(key_of(route)) if route else None
                return (200, obj) if obj else (404, {"message": "no such object"})
            if path == "/_fake/requests":
                return 200, {"requests": STATE.requests}
            if path == "/_fake/failures":
                return 200, {"failures": STATE.failures}
            if path == "/_fake/tokens":
                STATE.tokens = set(body["tokens"])
                return 200, {"ok": True}
            if path == "/_fake/forbid":
                STATE.forbidden.add((body["verb"], body["resource"]))
                return 200, {"ok": True}
            if path == "/_fake/inject":
                STATE.injected.append({"verb": body["verb"], "resource": body["resource"], "status": body["status"], "count": body.get("count", 1)})
                return 200, {"ok": True}
            if path == "/_fake/logs":
                STATE.logs[(body["namespace"], body["pod"], body["container"], bool(body.get("previous")))] = body["text"]
                return 200, {"ok": True}
            if path == "/_fake/pdb_block":
                STATE.pdb_blocked.add((body["namespace"], body["pod"]))
                return 200, {"ok": True}
            if path == "/_fake/reset":
                STATE.reset()
                return 200, {"ok": True}
        return 404, {"message": "no such control endpoint"}

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        raw = self.read_body()
        if url.path.startswith("/_fake/"):
            code, body = self.control(method, url.path, query, raw)
            return self.answer(code, body)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        user = self.user()
        body = None
        record = {"method": method, "path": url.path, "query": query, "content_type": content_type, "user": user}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            code, answer = status(400, "BadRequest", "the request body is not JSON")
        else:
            record["body"] = body
            if user is None:
                code, answer = status(401, "Unauthorized", "Unauthorized")
            else:
                route = parse_path(url.path)
                if route is None:
                    code, answer = status(404, "NotFound", "the server could not find the requested resource")
                else:
                    code, answer = handle_api(method, route, query, content_type, body, user)
        record["status"] = code
        with STATE.lock:
            STATE.requests.append(record)
        self.answer(code, answer)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            context.load_verify_locations(args.client_ca)
            context.verify_mode = ssl.CERT_OPTIONAL
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1], flush=True)
    # Exit with the test process: it holds our stdin open.
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
