#!/usr/bin/env python3
"""Seeds the fuzz corpora (fuzz/corpus/<target>/, git-ignored) from real payloads.

Sources: the recorded alerts and callbacks in ../shared/fixtures/, the playbooks, integration
manifests and configs of this repository, and a few hand-made Cordon payloads (buttons, commands).
Each seed carries the target's selector byte first (see fuzz/fuzz_targets/*.rs). Files are named
by their SHA-1, as libFuzzer names what it adds, so seeding twice adds nothing.

    fuzz/seed.py [REPO_ROOT]
"""

import hashlib
import json
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent)
FIXTURES = ROOT.parent / "shared" / "fixtures"
CORPUS = ROOT / "fuzz" / "corpus"

# Index in SourceKind::ALL.
GUARDDUTY, SECURITYHUB, CLOUDTRAIL, DEFENDER, SENTINEL, MONITOR, SCC, FALCO, ALERTMANAGER, GENERIC = range(10)
# Index in the chat target's PLATFORMS.
SLACK_INTERACTION, SLACK_COMMAND, TEAMS, DISCORD = range(4)
# The tickets target's selector.
JIRA, SERVICENOW, TOKEN, HMAC = range(4)

counts = {}


def add(target, pick, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    elif not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    data = (bytes([pick]) if pick is not None else b"") + payload
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / hashlib.sha1(data).hexdigest()
    if not path.exists():
        path.write_bytes(data)
        counts[target] = counts.get(target, 0) + 1


def load(path):
    return json.loads(path.read_text())


def alerts():
    by_folder = {
        "aws_guardduty": GUARDDUTY,
        "aws_securityhub": SECURITYHUB,
        "aws_cloudtrail": CLOUDTRAIL,
        "gcp_scc": SCC,
        "falco": FALCO,
        "alertmanager": ALERTMANAGER,
    }
    by_name = {"defender": DEFENDER, "sentinel": SENTINEL, "monitor": MONITOR}
    for path in sorted((FIXTURES / "alerts").glob("*/*.json")):
        text = path.read_text()
        if path.parent.name in by_folder:
            pick = by_folder[path.parent.name]
        else:
            pick = next((v for k, v in by_name.items() if k in path.name), GENERIC)
        if '"TopicArn"' in text:
            add("sns", pick if pick < 3 else GUARDDUTY, text)
            message = load(path).get("Message")
            if isinstance(message, str):
                add("intake", pick, message)
            continue
        add("intake", pick, text)
        if pick in (GUARDDUTY, SECURITYHUB, CLOUDTRAIL):
            add("sns", pick, sns_envelope(text))
    for path in sorted((ROOT / "playbooks" / "fixtures").glob("*.json")):
        # The playbook test fixtures are alerts with their source named in the file name.
        name = path.name
        pick = next(
            (v for k, v in {
                "aws-guardduty": GUARDDUTY, "aws-securityhub": SECURITYHUB, "azure-defender": DEFENDER,
                "azure-sentinel": SENTINEL, "falco": FALCO, "generic": GENERIC,
            }.items() if name.startswith(k)),
            GENERIC,
        )
        add("intake", pick, path.read_text())
    add("intake", GENERIC, {
        "title": "Outbound connection to a known mining pool", "kind": "miner.connection",
        "severity": "high", "observed_at": "2024-05-01T12:00:00Z",
        "resource": {"kind": "aws.ec2.instance", "id": "i-0abc", "region": "eu-west-1"},
        "network": {"remote_ip": "203.0.113.7", "remote_port": 3333, "local_ip": "::1"},
        "labels": {"team": "payments", "n": 1, "x": None}, "dedup_key": "k",
    })
    add("intake", GENERIC, [{"title": "a"}, {"title": "b", "severity": 9.5}])


def sns_envelope(message, kind="Notification"):
    env = {
        "Type": kind,
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
        "Subject": "My First Message",
        "Message": message,
        "Timestamp": "2012-05-02T00:54:06.655Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+DcEwjAPg8O9mY8dReBSwksfg2S7WKQcikcNKWLQjwu6A4VbeS0QHVCkhRS7fUQvi2egU3N858fiTDN6bkkOxYDVrY0Ad8L10Hs3zH81mtnPk5uvvolIC1CXGu43obcgFxeL3khZl8IKvO61GWB6jI9b5+gLPoBc1Q=",
        "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0",
    }
    if kind != "Notification":
        del env["Subject"], env["UnsubscribeURL"]
        env["Token"] = "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747ba6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736"
        env["SubscribeURL"] = "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37"
    return json.dumps(env)


def sns_confirmations():
    for kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
        add("sns", GUARDDUTY, sns_envelope("You have chosen to subscribe to the topic.", kind))
    add("sns", CLOUDTRAIL, sns_envelope('{"Records": []}').replace('"1"', '"2"'))


def yaml_files():
    for path in sorted((ROOT / "playbooks").glob("*.yaml")):
        add("playbook", None, path.read_text())
    for path in sorted((ROOT / "tests" / "data" / "playbooks").rglob("*.y*ml")):
        add("playbook", None, path.read_text())
    for path in sorted((ROOT / "integrations").glob("*/manifest.yaml")):
        add("manifest", 0, path.read_text())
    for path in [ROOT / "config.example.yaml", *sorted((ROOT / "deploy").rglob("*.y*ml"))]:
        if path.is_file():
            add("manifest", 1, path.read_text())
    add("manifest", 1, "server:\n  listen: 127.0.0.1:0\nsources:\n  generic:\n    auth:\n      bearer:\n        token: ${CORDON_TOKEN:-x}\n")


def chat():
    callbacks = FIXTURES / "callbacks"
    button = json.dumps({"run": "01J0000000000000000000000", "step": "isolate"})
    for path in sorted((callbacks / "slack").glob("*.json")):
        doc = load(path)
        payloads = [doc.get("payload")] + [v for v in doc.values() if isinstance(v, dict)]
        for p in filter(None, payloads):
            if "command" in p and "user_id" in p:
                add("chat", SLACK_COMMAND, urllib.parse.urlencode(p))
            elif "actions" in p or "type" in p:
                add("chat", SLACK_INTERACTION, urllib.parse.urlencode({"payload": json.dumps(p)}))
                if isinstance(p.get("actions"), list) and p["actions"]:
                    ours = json.loads(json.dumps(p))
                    ours["actions"][0]["action_id"] = "cordon_approve"
                    ours["actions"][0]["value"] = button
                    add("chat", SLACK_INTERACTION, urllib.parse.urlencode({"payload": json.dumps(ours)}))
    for text in ("status", "approve 01J0 isolate", 'run triage note="two words" ip=1.2.3.4', "“quoted”"):
        add("chat", SLACK_COMMAND, urllib.parse.urlencode({"user_id": "U123", "user_name": "ana", "text": text}))
    ours = {"cordon": "approval", "run_id": "01J0", "step": "isolate", "decision": "approve"}
    for path in sorted((callbacks / "teams").glob("*.json")):
        doc = load(path)
        for activity in [doc] + [v for v in doc.values() if isinstance(v, dict)]:
            if "type" in activity:
                add("chat", TEAMS, activity)
                clicked = dict(activity, value={"action": {"data": ours}} if activity["type"] == "invoke" else ours)
                add("chat", TEAMS, clicked)
    add("chat", TEAMS, {"type": "installationUpdate", "action": "add", "serviceUrl": "https://smba.example/",
                        "conversation": {"id": "19:abc@thread.tacv2;messageid=1"}, "recipient": {"id": "28:bot"}})
    for path in sorted((callbacks / "discord").glob("*.json")):
        doc = load(path)
        for interaction in [v for v in doc.values() if isinstance(v, dict)]:
            if "application_id" in interaction:
                add("chat", DISCORD, interaction)
                for custom_id in ("approve:01J0:isolate", "deny:#k1"):
                    add("chat", DISCORD, dict(interaction, data={"custom_id": custom_id, "component_type": 2}))
                add("chat", DISCORD, dict(interaction, type=2, data={"name": "cordon", "options": [
                    {"name": "run", "type": 1, "options": [
                        {"name": "playbook", "type": 3, "value": "triage"},
                        {"name": "inputs", "type": 3, "value": "ip=1.2.3.4 note=x"}]}]}))
    add("chat", DISCORD, {"id": "1", "application_id": "2", "type": 1})


def tickets():
    for path in sorted((FIXTURES / "callbacks" / "jira").glob("*.json")):
        doc = load(path)
        add("tickets", JIRA, doc)
        doc["webhookEvent"] = "comment_created"
        doc["comment"] = {"id": "10001", "author": {"accountId": "5b10"}, "body": {
            "type": "doc", "version": 1, "content": [
                {"type": "paragraph", "content": [{"type": "text", "text": "/cordon approve 01J0 isolate"}]},
                {"type": "paragraph", "content": [{"type": "text", "text": "thanks"}]}]}}
        add("tickets", JIRA, doc)
    add("tickets", SERVICENOW, {
        "sys_id": "46d44a5c", "number": "INC0010001", "correlation_id": "01J0", "state": "6",
        "previous_state": "2", "assigned_to": "ana", "previous_assigned_to": "", "updated_by": "ana",
        "sys_mod_count": "3", "work_notes": "/cordon deny 01J0 isolate\nsecond line", "comments": "",
    })
    add("tickets", TOKEN, "token=fuzz-token&x=1\nauthorization\nBearer fuzz-token\n{}")
    add("tickets", TOKEN, "a=b\nx-cordon-token\nfuzz-token\n{}")
    add("tickets", HMAC, "\nx-hub-signature\nsha256=0f3a8c1b5e\n{\"webhookEvent\":\"x\"}")
    add("tickets", HMAC, "\nx-hub-signature\nDz8Rk1ZyYf2uJ5aJ3m0kQ0X3yM9b7pR2q6s8t0u2w4Y=\n{}")


alerts()
sns_confirmations()
yaml_files()
chat()
tickets()
for target in ("intake", "sns", "playbook", "manifest", "chat", "tickets"):
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    total = sum(1 for _ in folder.iterdir())
    print(f"seeded {target}: {counts.get(target, 0)} new, {total} in fuzz/corpus/{target}")
