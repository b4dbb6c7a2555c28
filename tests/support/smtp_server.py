"""A real SMTP server for the email tests: aiosmtpd (pinned in scripts/peers), started by
tests/support/paging.rs with the options below. Every message it receives is parsed with Python's
own `email` package and written to OUT as <n>.json (envelope, headers, each MIME part decoded, the
AUTH login used), so the tests check what a mail client would show. It prints `ready <port>` once
it listens, and runs until it is killed.

  python smtp_server.py --port P --out DIR [--tls none|starttls|implicit] [--cert PEM --key PEM]
                        [--user U --password P]
"""

import argparse
import threading
import email
import email.policy
import json
import os
import ssl
import sys

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Keep:
    def __init__(self, out):
        self.out = out
        self.n = 0

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                parts.append({"content_type": part.get_content_type(), "multipart": True})
                continue
            payload = part.get_payload(decode=True) or b""
            parts.append({
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                "disposition": part.get_content_disposition(),
                "filename": part.get_filename(),
                "content": payload.decode(part.get_content_charset() or "utf-8", "replace"),
            })
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth_login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "tls": server.transport.get_extra_info("sslcontext") is not None or session.ssl is not None,
            "headers": {k: str(v) for k, v in message.items()},
            "content_type": message.get_content_type(),
            "parts": parts,
            "raw": envelope.original_content.decode("utf-8", "replace"),
        }
        self.n += 1
        path = os.path.join(self.out, f"{self.n:04}.json")
        with open(path + ".partial", "w") as f:
            json.dump(record, f)
        os.replace(path + ".partial", path)
        return "250 OK"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--tls", default="none", choices=["none", "starttls", "implicit"])
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    a = p.parse_args()

    context = None
    if a.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(a.cert, a.key)

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == a.user
            and auth_data.password.decode() == a.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    kwargs = dict(hostname="127.0.0.1", port=a.port)
    if a.user:
        # aiosmtpd does not count implicit TLS as TLS for `auth_require_tls` (it knows only
        # STARTTLS); the session is encrypted from the first byte there anyway.
        kwargs.update(authenticator=authenticate, auth_required=True,
                      auth_require_tls=a.tls == "starttls")
    else:
        kwargs.update(auth_require_tls=False)
    if a.tls == "starttls":
        kwargs.update(tls_context=context, require_starttls=True)
    elif a.tls == "implicit":
        kwargs.update(ssl_context=context)
    controller = Controller(Keep(a.out), **kwargs)
    controller.start()
    print(f"ready {a.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


if __name__ == "__main__":
    sys.exit(main())
