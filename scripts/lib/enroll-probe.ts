// Sends one credential request to an issuer, as an agent in a lab namespace would, and prints
// {"status":N,"error":reason} or {"status":200,"subject":...}. The request is signed by a fresh
// key; with "forged-proof" its signature is another key's (a proof of possession that fails).
// With "metrics" instead of an attestation it prints the issuer's metrics: {"metrics":text}.
//   enroll-probe <issuer url> <tls ca file> <attestation JSON> [forged-proof]
//   enroll-probe <issuer url> <tls ca file> metrics
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { decodeJwt } from 'jose';
import { buildCredentialRequest, type Attestation } from '../../agent/src/issuer/credential-request.ts';
import { CREDENTIALS_PATH } from '../../agent/src/issuer/server.ts';
import { generateKeyPair } from '../../agent/src/identity/key-generation.ts';

const [url, tlsCa, attestationJson, mode] = process.argv.slice(2);
if (attestationJson === 'metrics') {
  const metrics = request(new URL('/metrics', url), { ca: readFileSync(tlsCa!), timeout: 10_000 }, (response) => {
    const chunks: Buffer[] = [];
    response.on('data', (chunk: Buffer) => chunks.push(chunk));
    response.on('end', () => { process.stdout.write(`${JSON.stringify({ metrics: Buffer.concat(chunks).toString() })}\n`); });
  });
  metrics.on('error', (error) => { process.stdout.write(`${JSON.stringify({ error: error.message })}\n`); });
  metrics.end();
  await new Promise((resolve) => metrics.on('close', resolve));
  process.exit(0);
}
const attestation = JSON.parse(attestationJson!) as Attestation;
const nowSeconds = Math.floor(Date.now() / 1000);
const build = () => buildCredentialRequest({ signKey: generateKeyPair('ed25519').privateKey, kexPublicKey: generateKeyPair('x25519').publicKey, attestation, nowSeconds });
let compact = await build();
if (mode === 'forged-proof') compact = `${compact.split('.').slice(0, 2).join('.')}.${(await build()).split('.')[2]!}`;
const call = request(new URL(CREDENTIALS_PATH, url), { method: 'POST', ca: readFileSync(tlsCa!), headers: { 'content-type': 'application/json' }, timeout: 10_000 }, (response) => {
  const chunks: Buffer[] = [];
  response.on('data', (chunk: Buffer) => chunks.push(chunk));
  response.on('end', () => {
    const answer = JSON.parse(Buffer.concat(chunks).toString()) as { credential?: string; error?: string };
    const subject = answer.credential === undefined ? undefined : decodeJwt(answer.credential).sub;
    process.stdout.write(`${JSON.stringify({ status: response.statusCode, ...(answer.error === undefined ? {} : { error: answer.error }), ...(subject === undefined ? {} : { subject }) })}\n`);
  });
});
call.on('error', (error) => { process.stdout.write(`${JSON.stringify({ status: 0, error: error.message })}\n`); });
call.end(JSON.stringify({ request: compact }));
