// The OIDC issuer of the console tests: oauth2-mock-server (pinned by scripts/peers) behind a
// sign-in page of its own, on 127.0.0.1:<port>. Its /authorize first shows a form asking who signs
// in (as a real issuer's login page does); the form sends the browser on to the mock's own
// /authorize with `cordon_test_user`, and the code it issues makes ID and access tokens whose `sub`
// is that user. Everything else (discovery, key set, token endpoint with PKCE and nonce) is the
// mock's.
//
//   node tests/browser/issuer.mjs <path of oauth2-mock-server's dist/index.mjs> <port>
import http from 'node:http';
import { pathToFileURL } from 'node:url';

const [modulePath, port] = process.argv.slice(2);
const { OAuth2Issuer, OAuth2Service } = await import(pathToFileURL(modulePath).href);

const issuer = new OAuth2Issuer();
issuer.url = `http://127.0.0.1:${port}`;
await issuer.keys.generate('RS256');
const service = new OAuth2Service(issuer);

// code → the user who signed in for it.
const users = new Map();
service.on('beforeAuthorizeRedirect', (redirect, req) => {
  const url = new URL(req.url, issuer.url);
  const user = url.searchParams.get('cordon_test_user');
  const code = redirect.url.searchParams.get('code');
  if (user && code) users.set(code, user);
});
service.on('beforeTokenSigning', (token, req) => {
  const code = req.body?.code;
  if (code && users.has(code)) token.payload.sub = users.get(code);
});
// Both tokens of one code are signed; forget the code after its token answer.
service.on('beforeResponse', (_response, req) => {
  const code = req.body?.code;
  if (code) users.delete(code);
});

const escape = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

const server = http.createServer((req, res) => {
  const url = new URL(req.url, issuer.url);
  if (req.method === 'GET' && url.pathname === '/authorize' && !url.searchParams.get('cordon_test_user')) {
    const hidden = [...url.searchParams].map(([k, v]) =>
      `<input type="hidden" name="${escape(k)}" value="${escape(v)}">`).join('');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(`<!doctype html><html lang="en"><head><title>Test issuer sign-in</title></head><body>
<h1>Test issuer</h1><form method="get" action="/authorize">${hidden}
<label for="user">Username</label> <input id="user" name="cordon_test_user" required>
<button type="submit">Sign in</button></form></body></html>`);
    return;
  }
  service.requestHandler(req, res);
});
server.listen(Number(port), '127.0.0.1', () => console.log(`issuer ${issuer.url}`));
