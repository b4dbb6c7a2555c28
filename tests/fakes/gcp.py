"""A fake of the Google Cloud APIs Cordon's GCP integrations call, for tests.

Follows the REST references of:

- Compute Engine API v1 (compute.v1, Discovery revision as shipped by google-api-python-client
  2.202.0): instances get/setTags/stop/start, firewalls get/list/insert, disks get,
  disks createSnapshot, snapshots get/insert, zoneOperations and globalOperations get/wait;
- IAM API v1 (iam.v1): projects.serviceAccounts get/disable/enable and
  projects.serviceAccounts.keys get/disable/enable;
- Cloud Logging API v2 (logging.v2): entries.list, with the subset of the Logging query
  language Cordon writes (terms joined by AND: `field = "v"`, `field : "v"`, `field >= "v"`,
  `field <= "v"`); any other filter is refused with 400, so a test sees it;
- Google's OAuth 2.0 token endpoint for service accounts (RFC 7523 JWT bearer grant), verifying
  the assertion's RS256 signature with the test's public key (google.auth.jwt.decode) and its
  iss, aud, scope, iat and exp;
- the GCE metadata server's token endpoint
  (/computeMetadata/v1/instance/service-accounts/default/token, `Metadata-Flavor: Google`).

Every API call is resolved to its method in the Discovery documents (path and httpMethod), its
query parameters checked against the method's and the standard ones, and its body validated
against the method's request schema: unknown properties, types, enums, patterns and the
properties the document marks required for that method. An invalid request is answered 400 with
the reason, and recorded (GET /_fake/invalid) so tests assert none happened.

Run: `python gcp.py`; it binds 127.0.0.1 on a free port and prints the port on stdout.
Control endpoints under /_fake/ seed resources, read state and the request log, and inject
errors (see `Fake.control`).
"""

import base64
import hashlib
import json
import os
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import googleapiclient
import google.auth.jwt

DOCS = os.path.join(os.path.dirname(googleapiclient.__file__), "discovery_cache", "documents")
SCOPE = "https://www.googleapis.com/auth/cloud-platform"
COMPUTE = "https://www.googleapis.com/compute/v1/"
# Query parameters every Google API takes (the Discovery documents' top-level `parameters`).
STANDARD_PARAMS = {
    "$.xgafv", "access_token", "alt", "callback", "fields", "key", "oauth_token",
    "prettyPrint", "quotaUser", "upload_protocol", "uploadType", "userIp",
}


class Invalid(Exception):
    pass


class ApiError(Exception):
    def __init__(self, code, message, reason, status=None):
        super().__init__(message)
        self.code, self.message, self.reason, self.status = code, message, reason, status


def load_routes():
    routes = []
    for name in ("compute.v1", "iam.v1", "logging.v2"):
        with open(os.path.join(DOCS, name + ".json")) as f:
            doc = json.load(f)

        def walk(resources):
            for resource in resources.values():
                for method in resource.get("methods", {}).values():
                    template = doc["servicePath"] + method.get("flatPath", method["path"])
                    pattern = ""
                    literal = 0
                    for part in re.split(r"(\{\+?[^}]+\})", template):
                        if part.startswith("{+"):
                            pattern += "(.+)"
                        elif part.startswith("{"):
                            pattern += "([^/:]+)"
                        else:
                            pattern += re.escape(part)
                            literal += len(part)
                    routes.append({
                        "doc": doc,
                        "method": method,
                        "http": method["httpMethod"],
                        "regex": re.compile("^/" + pattern + "$"),
                        "literal": literal,
                    })
                walk(resource.get("resources", {}))

        walk(doc["resources"])
    routes.sort(key=lambda r: -r["literal"])
    return routes


ROUTES = load_routes()


def resolve(http_method, path):
    for route in ROUTES:
        if route["http"] == http_method and route["regex"].match(path):
            return route
    return None


def check(schema, value, doc, method_id, where):
    """Validates `value` against a Discovery schema; raises Invalid with the reason."""
    if "$ref" in schema:
        schema = doc["schemas"][schema["$ref"]]
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise Invalid(f"{where}: expected an object")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in props:
                check(props[key], item, doc, method_id, f"{where}.{key}")
            elif extra is not None:
                check(extra, item, doc, method_id, f"{where}.{key}")
            else:
                raise Invalid(f"{where}: unknown field `{key}`")
        for key, prop in props.items():
            required = prop.get("annotations", {}).get("required", [])
            if method_id in required and key not in value:
                raise Invalid(f"{where}: `{key}` is required by {method_id}")
    elif kind == "array":
        if not isinstance(value, list):
            raise Invalid(f"{where}: expected an array")
        for i, item in enumerate(value):
            check(schema.get("items", {}), item, doc, method_id, f"{where}[{i}]")
            if "pattern" in schema and isinstance(item, str):
                check_pattern(schema["pattern"], item, f"{where}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise Invalid(f"{where}: expected a string")
        if "enum" in schema and value not in schema["enum"]:
            raise Invalid(f"{where}: `{value}` is not one of {schema['enum']}")
        if schema.get("format") in ("int64", "uint64") and not re.fullmatch(r"-?\d+", value):
            raise Invalid(f"{where}: expected an integer in a string")
        if "pattern" in schema:
            check_pattern(schema["pattern"], value, where)
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise Invalid(f"{where}: expected an integer")
    elif kind == "number":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise Invalid(f"{where}: expected a number")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise Invalid(f"{where}: expected a boolean")
    elif kind == "any" or kind is None:
        pass


def check_pattern(pattern, value, where):
    try:
        ok = re.fullmatch(pattern, value) is not None
    except re.error:
        return
    if not ok:
        raise Invalid(f"{where}: `{value}` does not match {pattern}")


def now_rfc3339():
    return time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())


def fingerprint(value):
    digest = hashlib.sha256(json.dumps(value, sort_keys=True).encode()).digest()[:8]
    return base64.b64encode(digest).decode()


class Fake:
    def __init__(self):
        self.lock = threading.RLock()
        self.ids = 1000
        self.instances = {}      # "projects/P/zones/Z/instances/I" -> Instance
        self.disks = {}          # "projects/P/zones/Z/disks/D" -> Disk
        self.firewalls = {}      # "projects/P/global/firewalls/F" -> Firewall
        self.snapshots = {}      # "projects/P/global/snapshots/S" -> Snapshot
        self.operations = {}     # "projects/P/zones/Z/operations/O" or ".../global/operations/O"
        self.accounts = {}       # email -> ServiceAccount
        self.keys = {}           # "projects/P/serviceAccounts/E/keys/K" -> ServiceAccountKey
        self.entries = []        # LogEntry
        self.credentials = {}    # client_email -> {public_key, key_id, audience}
        self.tokens = {}         # access token -> expiry (epoch seconds)
        self.token_lifetime = 3599
        self.operation_pending_polls = 0
        self.snapshot_pending_gets = 0
        self.page_cap = 1000     # entries.list may answer fewer than pageSize, as Logging does
        self.injected = []       # {method, path_contains, status, reason, count}
        self.requests = []       # {method, path, query, body, status}
        self.invalid = []        # {method, path, reason}
        self.token_log = []      # {kind: jwt|metadata, ok, reason}

    def next_id(self):
        self.ids += 1
        return str(self.ids)

    # ---- OAuth and metadata -------------------------------------------------------------------

    def token(self, form):
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return self.refuse_token(400, "unsupported_grant_type", "Invalid grant_type.")
        assertion = form.get("assertion", "")
        try:
            header = json.loads(base64.urlsafe_b64decode(assertion.split(".")[0] + "=="))
            unverified = google.auth.jwt.decode(assertion, verify=False)
        except Exception:
            return self.refuse_token(400, "invalid_grant", "Invalid JWT: malformed assertion.")
        if header.get("alg") != "RS256":
            return self.refuse_token(400, "invalid_grant", "Invalid JWT: alg must be RS256.")
        known = self.credentials.get(unverified.get("iss"))
        if known is None:
            return self.refuse_token(400, "invalid_grant", "Invalid grant: account not found")
        if header.get("kid") not in (None, known["key_id"]):
            return self.refuse_token(400, "invalid_grant", "Invalid JWT Signature.")
        try:
            claims = google.auth.jwt.decode(
                assertion, certs={known["key_id"]: known["public_key"]},
                audience=known["audience"], clock_skew_in_seconds=10)
        except Exception as e:
            reason = "Invalid JWT Signature." if "signature" in str(e).lower() else f"Invalid JWT: {e}"
            return self.refuse_token(400, "invalid_grant", reason)
        if SCOPE not in str(claims.get("scope", "")).split(" "):
            return self.refuse_token(400, "invalid_scope", "Invalid OAuth scope or ID token audience provided.")
        if int(claims["exp"]) - int(claims["iat"]) > 3600:
            return self.refuse_token(400, "invalid_grant", "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
        self.token_log.append({"kind": "jwt", "ok": True, "iss": claims["iss"]})
        return 200, self.issue()

    def refuse_token(self, status, error, description):
        self.token_log.append({"kind": "jwt", "ok": False, "reason": f"{error}: {description}"})
        return status, {"error": error, "error_description": description}

    def issue(self):
        token = "ya29.fake-" + self.next_id()
        self.tokens[token] = time.time() + self.token_lifetime
        return {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def authorized(self, header):
        if not header or not header.startswith("Bearer "):
            return False
        expiry = self.tokens.get(header[len("Bearer "):])
        return expiry is not None and expiry > time.time()

    # ---- Compute ------------------------------------------------------------------------------

    def operation(self, scope, kind, target, error=None):
        """A new operation in `scope` (projects/P/zones/Z or projects/P/global)."""
        name = "operation-" + self.next_id()
        key = f"{scope}/operations/{name}"
        op = {
            "kind": "compute#operation",
            "id": self.next_id(),
            "name": name,
            "operationType": kind,
            "targetLink": COMPUTE + target,
            "status": "RUNNING",
            "progress": 0,
            "insertTime": now_rfc3339(),
            "selfLink": COMPUTE + key,
            "_polls": self.operation_pending_polls,
        }
        if "/zones/" in scope:
            op["zone"] = COMPUTE + scope
        error = error or self.__dict__.pop("next_operation_error", None)
        if error:
            op["_error"] = error
        self.operations[key] = op
        return self.public(op)

    def poll(self, key):
        op = self.operations.get(key)
        if op is None:
            raise ApiError(404, f"The resource '{key}' was not found", "notFound")
        if op["_polls"] > 0:
            op["_polls"] -= 1
        elif op["status"] != "DONE":
            op["status"], op["progress"], op["endTime"] = "DONE", 100, now_rfc3339()
            if op.get("_error"):
                op["error"] = {"errors": [op["_error"]]}
        return self.public(op)

    @staticmethod
    def public(resource):
        return {k: v for k, v in resource.items() if not k.startswith("_")}

    def instance(self, key):
        found = self.instances.get(key)
        if found is None:
            raise ApiError(404, f"The resource '{key}' was not found", "notFound")
        return found

    def compute(self, method_id, path, query, body):
        parts = path.split("/")[3:]  # after /compute/v1
        key = "/".join(parts)
        if method_id == "compute.instances.get":
            return 200, self.instance(key)
        if method_id == "compute.instances.setTags":
            key = key.rsplit("/", 1)[0]
            instance = self.instance(key)
            if body.get("fingerprint") != instance["tags"]["fingerprint"]:
                raise ApiError(412, "Supplied fingerprint does not match current metadata fingerprint.", "conditionNotMet")
            items = body.get("items", [])
            instance["tags"] = {"items": items, "fingerprint": fingerprint(items)}
            if not items:
                instance["tags"].pop("items")
            scope = key.rsplit("/instances/", 1)[0]
            return 200, self.operation(scope, "setTags", key)
        if method_id in ("compute.instances.stop", "compute.instances.start"):
            verb = method_id.rsplit(".", 1)[1]
            key = key.rsplit("/", 1)[0]
            instance = self.instance(key)
            instance["status"] = "TERMINATED" if verb == "stop" else "RUNNING"
            scope = key.rsplit("/instances/", 1)[0]
            return 200, self.operation(scope, verb, key)
        if method_id == "compute.firewalls.get":
            found = self.firewalls.get(key)
            if found is None:
                raise ApiError(404, f"The resource '{key}' was not found", "notFound")
            return 200, found
        if method_id == "compute.firewalls.list":
            prefix = key + "/"
            items = [f for k, f in sorted(self.firewalls.items()) if k.startswith(prefix)]
            return 200, {"kind": "compute#firewallList", "id": key, "items": items, "selfLink": COMPUTE + key}
        if method_id == "compute.firewalls.insert":
            name = body["name"]
            target = f"{key}/{name}"
            if target in self.firewalls:
                raise ApiError(409, f"The resource '{target}' already exists", "alreadyExists")
            self.check_firewall(body)
            rule = dict(body)
            rule.update({
                "kind": "compute#firewall", "id": self.next_id(),
                "creationTimestamp": now_rfc3339(), "selfLink": COMPUTE + target,
            })
            rule.setdefault("disabled", False)
            rule.setdefault("priority", 1000)
            rule.setdefault("direction", "INGRESS")
            self.firewalls[target] = rule
            return 200, self.operation(key.rsplit("/firewalls", 1)[0], "insert", target)
        if method_id == "compute.disks.get":
            found = self.disks.get(key)
            if found is None:
                raise ApiError(404, f"The resource '{key}' was not found", "notFound")
            return 200, found
        if method_id == "compute.disks.createSnapshot":
            disk_key = key.rsplit("/", 1)[0]
            project = parts[1]
            return self.snapshot(project, dict(body, sourceDisk=COMPUTE + disk_key))
        if method_id == "compute.snapshots.insert":
            return self.snapshot(parts[1], body)
        if method_id == "compute.snapshots.get":
            found = self.snapshots.get(key)
            if found is None:
                raise ApiError(404, f"The resource '{key}' was not found", "notFound")
            if found["_pending"] > 0:
                found["_pending"] -= 1
            else:
                found["status"] = "READY"
            return 200, self.public(found)
        if method_id in ("compute.zoneOperations.get", "compute.globalOperations.get"):
            return 200, self.poll(key)
        if method_id in ("compute.zoneOperations.wait", "compute.globalOperations.wait"):
            return 200, self.poll(key.rsplit("/", 1)[0])
        raise ApiError(501, f"{method_id} is not implemented by the fake", "notImplemented")

    def check_firewall(self, rule):
        """What Compute Engine refuses beyond the schema."""
        direction = rule.get("direction", "INGRESS")
        if direction == "EGRESS" and (rule.get("sourceRanges") or rule.get("sourceTags")):
            raise ApiError(400, "Invalid value for field 'resource.sourceRanges': EGRESS rules cannot have source ranges.", "invalid")
        if direction == "INGRESS" and rule.get("destinationRanges") and not rule.get("sourceRanges"):
            raise ApiError(400, "Invalid value for field 'resource': INGRESS rules need a source.", "invalid")
        if bool(rule.get("allowed")) == bool(rule.get("denied")):
            raise ApiError(400, "Exactly one of 'allowed' or 'denied' must be specified.", "invalid")
        ranges = rule.get("sourceRanges", []) + rule.get("destinationRanges", [])
        if any(":" in r for r in ranges) and any(":" not in r for r in ranges):
            raise ApiError(400, "Invalid value for field 'resource': IPv4 and IPv6 ranges cannot be mixed in one rule.", "invalid")
        priority = rule.get("priority", 1000)
        if not 0 <= priority <= 65535:
            raise ApiError(400, "Invalid value for field 'resource.priority'.", "invalid")
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", rule.get("name", "")):
            raise ApiError(400, "Invalid value for field 'resource.name'.", "invalid")
        if not rule.get("network", "").startswith(COMPUTE) and not rule.get("network", "").startswith("projects/"):
            raise ApiError(400, "Invalid value for field 'resource.network'.", "invalid")

    def snapshot(self, project, body):
        name = body["name"]
        key = f"projects/{project}/global/snapshots/{name}"
        if key in self.snapshots:
            raise ApiError(409, f"The resource '{key}' already exists", "alreadyExists")
        source = body.get("sourceDisk", "")
        disk_key = source.replace(COMPUTE, "")
        disk = self.disks.get(disk_key)
        if disk is None:
            raise ApiError(404, f"The resource '{disk_key}' was not found", "notFound")
        snap = dict(body)
        snap.update({
            "kind": "compute#snapshot", "id": self.next_id(), "status": "CREATING",
            "creationTimestamp": now_rfc3339(), "sourceDisk": disk["selfLink"],
            "sourceDiskId": disk["id"], "diskSizeGb": disk["sizeGb"],
            "storageBytes": str(int(disk["sizeGb"]) * 1024 * 1024 * 7), "selfLink": COMPUTE + key,
            "_pending": self.snapshot_pending_gets,
        })
        self.snapshots[key] = snap
        return 200, self.operation(f"projects/{project}/global", "createSnapshot", key)

    # ---- IAM ----------------------------------------------------------------------------------

    def account(self, project, ident):
        for email, account in self.accounts.items():
            if ident in (email, account["uniqueId"]) and project in ("-", account["projectId"]):
                return account
        raise ApiError(404, f"Unknown service account", "notFound", "NOT_FOUND")

    def iam(self, method_id, path):
        m = re.match(r"^/v1/projects/([^/]+)/serviceAccounts/([^/:]+)(?:/keys/([^/:]+))?(?::(\w+))?$", path)
        project, ident, key_id, verb = m.groups()
        account = self.account(project, ident)
        if key_id is None:
            if method_id == "iam.projects.serviceAccounts.get":
                return 200, account
            account["disabled"] = verb == "disable"
            return 200, {}
        name = f"{account['name']}/keys/{key_id}"
        key = self.keys.get(name)
        if key is None:
            raise ApiError(404, f"Service account key {key_id} does not exist.", "notFound", "NOT_FOUND")
        if method_id == "iam.projects.serviceAccounts.keys.get":
            return 200, key
        key["disabled"] = verb == "disable"
        if key["disabled"]:
            key["disableReason"] = "SERVICE_ACCOUNT_KEY_DISABLE_REASON_USER_INITIATED"
        else:
            key.pop("disableReason", None)
        return 200, {}

    # ---- Logging ------------------------------------------------------------------------------

    def list_entries(self, body):
        if not body.get("resourceNames"):
            raise ApiError(400, "resourceNames is required", "badRequest", "INVALID_ARGUMENT")
        tests = parse_filter(body.get("filter", ""))
        projects = set()
        for name in body["resourceNames"]:
            if not name.startswith("projects/"):
                raise ApiError(400, f"Unsupported resource name {name}", "badRequest", "INVALID_ARGUMENT")
            projects.add(name.split("/")[1])
        found = [e for e in self.entries
                 if e["logName"].split("/")[1] in projects and all(t(e) for t in tests)]
        order = body.get("orderBy", "timestamp asc")
        if order not in ("timestamp asc", "timestamp desc"):
            raise ApiError(400, f"Invalid orderBy {order}", "badRequest", "INVALID_ARGUMENT")
        found.sort(key=lambda e: (e["timestamp"], e.get("insertId", "")), reverse=order == "timestamp desc")
        size = body.get("pageSize", 50)
        if size < 0 or size > 1000:
            raise ApiError(400, "pageSize must be between 0 and 1000", "badRequest", "INVALID_ARGUMENT")
        size = min(size or 50, self.page_cap)
        start = int(body.get("pageToken") or 0)
        page = found[start:start + size]
        answer = {"entries": page} if page else {}
        if start + size < len(found):
            answer["nextPageToken"] = str(start + size)
        return 200, answer

    # ---- control ------------------------------------------------------------------------------

    def seed_instance(self, s):
        project, zone, name = s["project"], s["zone"], s["name"]
        key = f"projects/{project}/zones/{zone}/instances/{name}"
        disks = []
        for i, d in enumerate(s.get("disks", [{"name": name, "sizeGb": "10"}])):
            dkey = f"projects/{project}/zones/{zone}/disks/{d['name']}"
            self.disks[dkey] = {
                "kind": "compute#disk", "id": self.next_id(), "name": d["name"],
                "sizeGb": str(d.get("sizeGb", "10")), "zone": COMPUTE + f"projects/{project}/zones/{zone}",
                "status": "READY", "selfLink": COMPUTE + dkey, "type": COMPUTE + f"projects/{project}/zones/{zone}/diskTypes/pd-balanced",
                "users": [COMPUTE + key],
            }
            disks.append({
                "kind": "compute#attachedDisk", "type": "PERSISTENT", "mode": "READ_WRITE",
                "source": COMPUTE + dkey, "deviceName": d["name"], "index": i, "boot": i == 0,
                "autoDelete": i == 0, "interface": "SCSI", "diskSizeGb": str(d.get("sizeGb", "10")),
            })
        nics = []
        for i, network in enumerate(s.get("networks", ["default"])):
            net_project = project
            if "/" in network:
                net_project, network = network.split("/")
            nics.append({
                "kind": "compute#networkInterface", "name": f"nic{i}",
                "network": COMPUTE + f"projects/{net_project}/global/networks/{network}",
                "subnetwork": COMPUTE + f"projects/{net_project}/regions/{zone[:-2]}/subnetworks/{network}",
                "networkIP": f"10.128.0.{10 + i}", "fingerprint": fingerprint([network, i]),
                "stackType": "IPV4_ONLY",
            })
        tags = {"fingerprint": fingerprint(s.get("tags", []))}
        if s.get("tags"):
            tags["items"] = s["tags"]
        self.instances[key] = {
            "kind": "compute#instance", "id": self.next_id(), "name": name,
            "creationTimestamp": now_rfc3339(),
            "zone": COMPUTE + f"projects/{project}/zones/{zone}",
            "machineType": COMPUTE + f"projects/{project}/zones/{zone}/machineTypes/e2-medium",
            "status": s.get("status", "RUNNING"), "tags": tags,
            "labels": s.get("labels", {}), "labelFingerprint": fingerprint(s.get("labels", {})),
            "networkInterfaces": nics, "disks": disks, "selfLink": COMPUTE + key,
            "metadata": {"kind": "compute#metadata", "fingerprint": fingerprint([])},
        }
        return self.instances[key]

    def seed_account(self, s):
        project, email = s["project"], s["email"]
        self.accounts[email] = {
            "name": f"projects/{project}/serviceAccounts/{email}", "projectId": project,
            "uniqueId": s.get("uniqueId", "1" + self.next_id().zfill(20)), "email": email,
            "displayName": s.get("displayName", email.split("@")[0]), "etag": "MDEwMjE5MjA=",
            "oauth2ClientId": self.next_id(), "disabled": s.get("disabled", False),
        }
        for key_id in s.get("keys", []):
            self.keys[f"projects/{project}/serviceAccounts/{email}/keys/{key_id}"] = {
                "name": f"projects/{project}/serviceAccounts/{email}/keys/{key_id}",
                "validAfterTime": "2024-01-01T00:00:00Z", "validBeforeTime": "9999-12-31T23:59:59Z",
                "keyAlgorithm": "KEY_ALG_RSA_2048", "keyOrigin": "GOOGLE_PROVIDED",
                "keyType": "USER_MANAGED", "disabled": False,
            }
        return self.accounts[email]

    def control(self, method, path, body):
        if method == "POST" and path == "/_fake/instances":
            return 200, self.seed_instance(body)
        if method == "POST" and path == "/_fake/service_accounts":
            return 200, self.seed_account(body)
        if method == "POST" and path == "/_fake/log_entries":
            self.entries.extend(body)
            return 200, {"count": len(self.entries)}
        if method == "POST" and path == "/_fake/firewalls":
            self.firewalls[f"projects/{body['_project']}/global/firewalls/{body['name']}"] = {
                k: v for k, v in body.items() if k != "_project"}
            return 200, {}
        if method == "POST" and path == "/_fake/tags":
            # Another client changing the tags (a new fingerprint).
            instance = self.instance(body["instance"])
            instance["tags"] = {"items": body["items"], "fingerprint": fingerprint(body["items"])}
            return 200, instance
        if method == "POST" and path == "/_fake/credentials":
            self.credentials[body["client_email"]] = body
            return 200, {}
        if method == "POST" and path == "/_fake/config":
            for name in ("token_lifetime", "operation_pending_polls", "snapshot_pending_gets", "page_cap"):
                if name in body:
                    setattr(self, name, body[name])
            return 200, {}
        if method == "POST" and path == "/_fake/inject":
            self.injected.append(dict(body))
            return 200, {}
        if method == "POST" and path == "/_fake/operation_error":
            self.next_operation_error = body
            return 200, {}
        if method == "GET" and path == "/_fake/state":
            return 200, {
                "instances": self.instances, "disks": self.disks, "firewalls": self.firewalls,
                "snapshots": {k: self.public(v) for k, v in self.snapshots.items()},
                "service_accounts": self.accounts, "keys": self.keys,
                "operations": {k: self.public(v) for k, v in self.operations.items()},
            }
        if method == "GET" and path == "/_fake/requests":
            return 200, self.requests
        if method == "GET" and path == "/_fake/invalid":
            return 200, self.invalid
        if method == "GET" and path == "/_fake/tokens":
            return 200, self.token_log
        raise ApiError(404, f"no control endpoint {method} {path}", "notFound")


def parse_filter(text):
    """The Logging query language subset Cordon writes, as predicates on an entry."""
    tests = []
    text = text.strip()
    if not text:
        return tests
    term = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(>=|<=|=|:|>|<)\s*"((?:[^"\\]|\\.)*)"\s*')
    pos = 0
    while True:
        m = term.match(text, pos)
        if not m:
            raise ApiError(400, f"Unparseable filter at {pos}: {text[pos:pos + 40]!r}", "badRequest", "INVALID_ARGUMENT")
        field, op, value = m.group(1), m.group(2), m.group(3).replace('\\"', '"').replace("\\\\", "\\")
        tests.append(make_test(field, op, value))
        pos = m.end()
        if pos >= len(text):
            return tests
        if text.startswith("AND", pos):
            pos += 3
            continue
        raise ApiError(400, f"Unsupported filter syntax at {pos}: {text[pos:pos + 40]!r}", "badRequest", "INVALID_ARGUMENT")


def make_test(field, op, value):
    def get(entry):
        node = entry
        for part in field.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    def test(entry):
        found = get(entry)
        if found is None:
            return False
        found = str(found)
        if op == "=":
            return found == value
        if op == ":":
            return value.lower() in found.lower()
        # RFC 3339 times in UTC compare as text, which is what Cordon filters on.
        return {">=": found >= value, "<=": found <= value, ">": found > value, "<": found < value}[op]

    return test


FAKE = Fake()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self, method):
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        with FAKE.lock:
            status, body, headers = self.dispatch(method, path, query, raw)
            if not path.startswith("/_fake/"):
                FAKE.requests.append({
                    "method": method, "path": path, "query": query,
                    "body": raw.decode("utf-8", "replace"), "status": status,
                })
        self.answer(status, body, headers)

    def dispatch(self, method, path, query, raw):
        try:
            if path.startswith("/_fake/"):
                body = json.loads(raw) if raw else {}
                status, answer = FAKE.control(method, path, body)
                return status, answer, ()
            if path == "/token" and method == "POST":
                form = dict(urllib.parse.parse_qsl(raw.decode()))
                status, answer = FAKE.token(form)
                return status, answer, ()
            if path == "/computeMetadata/v1/instance/service-accounts/default/token":
                if self.headers.get("Metadata-Flavor") != "Google":
                    FAKE.token_log.append({"kind": "metadata", "ok": False})
                    return 403, {"error": "Missing Metadata-Flavor:Google header."}, ()
                FAKE.token_log.append({"kind": "metadata", "ok": True})
                return 200, FAKE.issue(), (("Metadata-Flavor", "Google"),)
            return self.api(method, path, query, raw)
        except ApiError as e:
            error = {"code": e.code, "message": e.message,
                     "errors": [{"message": e.message, "domain": "global", "reason": e.reason}]}
            if e.status:
                error["status"] = e.status
            return e.code, {"error": error}, ()

    def api(self, method, path, query, raw):
        route = resolve(method, path)
        if route is None:
            raise ApiError(404, f"No such method: {method} {path}", "notFound")
        method_id = route["method"]["id"]
        try:
            known = set(route["method"].get("parameters", {})) | STANDARD_PARAMS
            for name in query:
                if name not in known:
                    raise Invalid(f"unknown query parameter `{name}` for {method_id}")
            body = {}
            if "request" in route["method"]:
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    raise Invalid("the body is not JSON")
                if body is None:
                    raise Invalid(f"{method_id} takes a {route['method']['request']['$ref']} body")
                check(route["method"]["request"], body, route["doc"], method_id, route["method"]["request"]["$ref"])
            elif raw.strip() not in (b"", b"{}"):
                raise Invalid(f"{method_id} takes no body")
        except Invalid as e:
            FAKE.invalid.append({"method": method, "path": path, "reason": str(e)})
            raise ApiError(400, f"Invalid request: {e}", "invalid", "INVALID_ARGUMENT")
        if not FAKE.authorized(self.headers.get("Authorization")):
            raise ApiError(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.", "authError", "UNAUTHENTICATED")
        for rule in FAKE.injected:
            if rule["count"] > 0 and rule.get("method", method) == method and rule["path_contains"] in path:
                rule["count"] -= 1
                raise ApiError(rule["status"], rule.get("message", f"injected {rule['status']}"), rule.get("reason", "injected"), rule.get("grpc"))
        if method_id.startswith("compute."):
            status, answer = FAKE.compute(method_id, path, query, body)
        elif method_id.startswith("iam."):
            status, answer = FAKE.iam(method_id, path)
        elif method_id == "logging.entries.list":
            status, answer = FAKE.list_entries(body)
        else:
            raise ApiError(501, f"{method_id} is not implemented by the fake", "notImplemented")
        return status, answer, ()

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PATCH(self):
        self.handle_any("PATCH")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
