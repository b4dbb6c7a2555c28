// An OIDC issuer for the tests: oauth2-mock-server (pinned by scripts/peers) on 127.0.0.1:<port>,
// with RS256 keys, discovery and JWKS as it serves them. Its token endpoint takes the
// client_credentials grant with `aud`; this wrapper lets a test ask for the claims it needs in the
// same request (`sub`, `email`, `email_verified`, `expired`), and adds a signing key on SIGUSR2
// (the issuer rotating its keys: the new key signs the next token).
//
//   node tests/data/oidc/issuer.mjs <path of oauth2-mock-server's dist/index.mjs> <port>
import { pathToFileURL } from 'node:url';

const [modulePath, port] = process.argv.slice(2);
const { OAuth2Server } = await import(pathToFileURL(modulePath).href);

const server = new OAuth2Server();
let current = (await server.issuer.keys.generate('RS256')).kid;

server.service.on('beforeTokenSigning', (token, req) => {
  const body = req.body ?? {};
  if (body.sub) token.payload.sub = body.sub;
  if (body.email) {
    token.payload.email = body.email;
    token.payload.email_verified = body.email_verified !== 'false';
  }
  if (body.expired) {
    token.payload.iat -= 7200;
    token.payload.nbf -= 7200;
    token.payload.exp = token.payload.iat + 600;
  }
});

// Sign with the newest key: the mock rotates through its keys otherwise.
const build = server.issuer.buildToken.bind(server.issuer);
server.issuer.buildToken = (opts) => build({ ...opts, kid: current });

process.on('SIGUSR2', async () => {
  current = (await server.issuer.keys.generate('RS256')).kid;
  console.log(`rotated ${current}`);
});

await server.start(Number(port), '127.0.0.1');
console.log(`issuer ${server.issuer.url}`);
