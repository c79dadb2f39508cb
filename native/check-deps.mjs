// Runs from binding.gyp before compiling: names the Debian package that is missing instead of
// letting the compiler fail on an include deep inside the addon.
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';

const required = [
  { header: 'libmnl/libmnl.h', pkgConfig: 'libmnl', debian: 'libmnl-dev' },
  { header: 'linux/netfilter/nfnetlink_queue.h', pkgConfig: null, debian: 'linux-libc-dev' },
  // The proof HMAC uses the OpenSSL Node runs on: Node's own headers ship it; a Node linked
  // against the system OpenSSL needs the system headers instead.
  { header: 'openssl/evp.h', pkgConfig: null, debian: 'libssl-dev' },
  // The kernel fast path: libbpf loads the programs, clang compiles them.
  { header: 'bpf/libbpf.h', pkgConfig: 'libbpf', debian: 'libbpf-dev' },
  // First contact's Ed25519 verification and X25519 agreement (curve25519.cc).
  { header: 'sodium.h', pkgConfig: 'libsodium', debian: 'libsodium-dev' },
];

const includeDirs = ['/usr/include', '/usr/local/include', join(dirname(dirname(process.execPath)), 'include', 'node')];
const missing = required.filter(
  (dep) => !includeDirs.some((dir) => existsSync(`${dir}/${dep.header}`)),
);
const clangFound = ['/usr/bin/clang', '/usr/local/bin/clang'].some((path) => existsSync(path));
if (!clangFound) missing.push({ debian: 'clang' });
if (missing.length > 0) {
  const names = missing.map((dep) => dep.debian).join(' ');
  process.stderr.write(
    `synpass native build: missing system package(s): ${names}\n` +
      `  install them with: apt-get install -y ${names}   (or run scripts/setup)\n`,
  );
  process.exit(1);
}

const mode = process.argv[2];
if (mode === '--libs') {
  const libs = ['libmnl', 'libbpf', 'libsodium'].map((name) => {
    try {
      return execFileSync('pkg-config', ['--libs', name], { encoding: 'utf8' }).trim() || `-l${name.slice(3)}`;
    } catch {
      // pkg-config is optional: all three install into the default library path on Debian.
      return `-l${name.slice(3)}`;
    }
  });
  process.stdout.write(libs.join(' '));
}
