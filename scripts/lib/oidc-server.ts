// A test service-account issuer for labs: serves OIDC discovery and a JWKS file on loopback, as
// the API server serves /.well-known/openid-configuration and /openid/v1/jwks. Prints
// {"listening":port}; serves for at most the given seconds.
//   oidc-server <port> <path prefix> <jwks file> [seconds]
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

const [port, prefix, jwksFile, seconds] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port!}${prefix!}`;
const server = createServer((request, response) => {
  response.setHeader('content-type', 'application/json');
  if (request.url === `${prefix!}/.well-known/openid-configuration`) response.end(JSON.stringify({ issuer, jwks_uri: `${issuer}/openid/v1/jwks` }));
  else if (request.url === `${prefix!}/openid/v1/jwks`) response.end(readFileSync(jwksFile!));
  else response.writeHead(404).end('{}');
});
server.listen(Number(port), '127.0.0.1', () => { process.stdout.write(`${JSON.stringify({ listening: Number(port) })}\n`); });
setTimeout(() => process.exit(0), Number(seconds ?? 300) * 1000).unref();
