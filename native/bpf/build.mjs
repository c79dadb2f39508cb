// Compiles the kernel programs to a BPF object (run by binding.gyp). The UAPI headers live in
// the multiarch include directory, which clang's BPF target does not search by itself.
import { execFileSync } from 'node:child_process';
import { arch } from 'node:os';

const [source, output] = process.argv.slice(2);
const multiarch = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' }[arch()] ?? `${arch()}-linux-gnu`;
try {
  execFileSync('clang', ['-O2', '-g', '-Wall', '-Werror', '-target', 'bpf', `-I/usr/include/${multiarch}`, '-c', source, '-o', output], { stdio: 'inherit' });
} catch {
  process.stderr.write(`synpass native build: compiling ${source} failed (needs clang and libbpf-dev: apt-get install -y clang libbpf-dev)\n`);
  process.exit(1);
}
