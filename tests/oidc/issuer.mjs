// A real outside OAuth 2 / OIDC issuer for metamcp's token tests: starts
// oauth2-mock-server (its library entry is the first argument) on
// 127.0.0.1 and a free port, with one RS256 key of kid "k1".
//
//   node tests/oidc/issuer.mjs <oauth2-mock-server/dist/index.mjs>
//
// Prints one JSON line on stdout once listening:
//   {"issuer", "token_endpoint", "jwks_uri", "public_key_pem"}
// and exits when its stdin closes (so a test that dies leaves nothing).
//
// Tokens come from the server's own /token endpoint (client_credentials,
// JSON body). Two extra body fields steer the token through the server's
// beforeTokenSigning hook:
//   "claims": {name: value, ...}   merged into the payload (null removes)
//   "header": {name: value, ...}   merged into the protected header (alg
//                                  cannot be changed: the server sets it)
// One extra route, for key rotation:
//   POST /test/keys {"kid": "k2", "alg": "RS256"}  adds a signing key
import { createPublicKey } from 'node:crypto';
import { pathToFileURL } from 'node:url';

const entry = process.argv[2];
if (!entry) {
  console.error('usage: issuer.mjs <path to oauth2-mock-server/dist/index.mjs>');
  process.exit(2);
}
const { OAuth2Server, Events } = await import(pathToFileURL(entry).href);

const server = new OAuth2Server();
const first = await server.issuer.keys.generate('RS256', { kid: 'k1' });

server.service.on(Events.BeforeTokenSigning, (token, req) => {
  const body = req.body ?? {};
  for (const [name, value] of Object.entries(body.claims ?? {})) {
    if (value === null) delete token.payload[name];
    else token.payload[name] = value;
  }
  for (const [name, value] of Object.entries(body.header ?? {})) {
    token.header[name] = value;
  }
});

server.service.addRoute('POST', '/test/keys', async (req, res) => {
  const { kid, alg } = req.body ?? {};
  const key = await server.issuer.keys.generate(alg ?? 'RS256', { kid });
  res.setHeader('content-type', 'application/json');
  res.end(JSON.stringify({ kid: key.kid }));
});

await server.start(0, '127.0.0.1');
const issuer = server.issuer.url;
const publicKeyPem = createPublicKey({ key: first, format: 'jwk' })
  .export({ type: 'spki', format: 'pem' });
process.stdout.write(
  JSON.stringify({
    issuer,
    token_endpoint: `${issuer}/token`,
    jwks_uri: `${issuer}/jwks`,
    public_key_pem: publicKeyPem,
  }) + '\n',
);

process.stdin.resume();
process.stdin.on('end', async () => {
  await server.stop();
  process.exit(0);
});
