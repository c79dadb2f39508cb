// What the kernel fast path's tc program costs a segment that is not a SYN (most of a host's
// traffic), and a SYN it drops or lets by without a proof (a scan or a flood; one this host only
// routes); and what a node's tc egress program costs a segment leaving it: the kernel runs the program on one crafted segment many times (BPF_PROG_TEST_RUN,
// through bpftool) and reports the mean. The baseline, measured in the same run, is a tc program
// that does nothing: the harness's own cost per run. The runs are made in a namespace of their
// own that routes (an interface there holds the server's address), so that a routing lookup the
// program makes is a real one. Root; nothing attached.
//   node --import tsx scripts/benchmarks/tc-program.ts [object.o ...]
// Objects default to the built one; give another tree's to compare (e.g. a worktree of the base).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fastPathObjectPath } from '../../agent/src/native/addon.ts';
import { configValue, FAST_SYN_OPTION, flowKey, flowValue } from '../../agent/src/kernel/layouts.ts';
import { ROOT } from '../lib/lab.ts';
import { ethernetFrame, ipv4Segment } from '../lib/packets.ts';
import { median } from './lab-load.ts';

const REPEAT = 1_000_000;
const RUNS = 9;
const BPFFS = '/sys/fs/bpf';

const objects = process.argv.slice(2).length > 0 ? process.argv.slice(2) : [fastPathObjectPath()];
const scratch = mkdtempSync(join(tmpdir(), 'synpass-tc-program-'));

function bpftool(args: string[]): string {
  return execFileSync('bpftool', args, { encoding: 'utf8' });
}

function hex(bytes: Uint8Array): string[] {
  return ['hex', ...Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0'))];
}

/** What marks a connection judged and untracked in an object's fast_flows (an older build's holds one byte). */
function untrackedFlow(map: string): Uint8Array {
  const { bytes_value: size } = JSON.parse(bpftool(['map', 'show', 'pinned', map, '-j'])) as { bytes_value: number };
  return size === 1 ? Uint8Array.of(1) : flowValue(null, true);
}

/** An object whose tc program accepts every packet at once. */
function emptyProgram(): string {
  const source = join(scratch, 'empty.bpf.c');
  writeFileSync(source, '#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\nSEC("tc") int synpass_ingress(struct __sk_buff *skb) { return 0; }\nchar LICENSE[] SEC("license") = "Dual BSD/GPL";\n');
  const object = join(scratch, 'empty.bpf.o');
  execFileSync(process.execPath, [join(ROOT, 'native/bpf/build.mjs'), source, object], { stdio: 'inherit' });
  return object;
}

const CLIENT = { address: '10.213.99.1', port: 40_000 };
const SERVER = { address: '10.213.99.2', port: 7000 };
/** A host behind the namespace's router (a gateway on the server's network). */
const ROUTED = '10.214.99.2';
const NAMESPACE = `synpass-tc-bench-${process.pid}`;
const TIMESTAMPS = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
const SACK = [1, 1, 5, 10, 0, 0, 0x10, 0, 0, 0, 0x20, 0];
const MARKER = [253, 4, 0xd3, 0x50];

/** An ACK from the client to the server, in its Ethernet frame, with `options`. */
function segment(options: number[]): Buffer {
  const packet = ipv4Segment({ source: CLIENT.address, target: SERVER.address, sourcePort: CLIENT.port, port: SERVER.port, sequence: 1000, acknowledgment: 2000, flags: 0x10, options: Uint8Array.from(options) });
  return ethernetFrame('02:00:00:00:00:02', '02:00:00:00:00:01', packet);
}

/** A SYN from the client to `target` on the server's port, in its Ethernet frame, with `options`. */
function syn(target: string, options: number[]): Buffer {
  const packet = ipv4Segment({ source: CLIENT.address, target, sourcePort: CLIENT.port, port: SERVER.port, sequence: 1000, options: Uint8Array.from(options) });
  return ethernetFrame('02:00:00:00:00:02', '02:00:00:00:00:01', packet);
}

/** A fast option (kind, ExID, id, time, MAC) for a pair no table holds. */
const UNKNOWN_FAST = [FAST_SYN_OPTION.kind, FAST_SYN_OPTION.length, FAST_SYN_OPTION.exid >> 8, FAST_SYN_OPTION.exid & 0xff, 0, 0, 0x5e, 0xed, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
const MSS = [2, 4, 0x05, 0xb4];

const JUDGED_MARK = 0x1000;
const EGRESS = 'synpass_egress';

/** `cloaked`: the server's port is closed to SYNs without identity (fast_cloak). `program`: another than the ingress one, run on a segment carrying `mark`. */
const CASES: { label: string; frame: Buffer; fast: boolean; cloaked?: boolean; program?: string; mark?: number }[] = [
  { label: 'segment of a fast connection, timestamps', frame: segment(TIMESTAMPS), fast: true },
  { label: 'segment of another connection, timestamps', frame: segment(TIMESTAMPS), fast: false },
  { label: 'segment of a fast connection, no options', frame: segment([]), fast: true },
  { label: 'segment of a fast connection, timestamps and SACK', frame: segment([...TIMESTAMPS, ...SACK]), fast: true },
  { label: 'segment of a fast connection, timestamps and a marker', frame: segment([...TIMESTAMPS, ...MARKER]), fast: true },
  { label: 'token-less SYN to a cloaked port here (a scan, a flood): dropped', frame: syn(SERVER.address, MSS), fast: false, cloaked: true },
  { label: 'token-less SYN to that port on a host routed to: let by', frame: syn(ROUTED, MSS), fast: false, cloaked: true },
  { label: 'fast SYN of a pair not known here: dropped', frame: syn(SERVER.address, [...MSS, ...UNKNOWN_FAST]), fast: false },
  { label: 'fast SYN of a pair not known here, to a host routed to: let by', frame: syn(ROUTED, [...MSS, ...UNKNOWN_FAST]), fast: false },
  { label: 'egress: a segment leaving, timestamps', frame: segment(TIMESTAMPS), fast: false, program: EGRESS },
  { label: 'egress: a SYN leaving, judged by the rules, no fast record', frame: syn(SERVER.address, MSS), fast: false, program: EGRESS, mark: JUDGED_MARK },
];

/** Pins to remove at the end, each named before anything is pinned there. */
const pinned: string[] = [];

/** The program of `object`, loaded with maps of its own (`configured`: the agent's settings written in them). */
function load(object: string, name: string, configured: boolean): { programs: string; maps: string } {
  const program = join(BPFFS, `synpass-bench-${name}-programs`);
  const maps = join(BPFFS, `synpass-bench-${name}-maps`);
  pinned.push(program, maps);
  bpftool(['prog', 'loadall', object, program, ...(configured ? ['pinmaps', maps] : [])]);
  if (configured) {
    // defer_mark set, as on a node whose rules judge its pods' SYNs after the DNAT: the egress program works then.
    const config = configValue({ realtimeOffsetNs: 0n, windowSeconds: 30, acceptMark: 0x100, clientMark: 0x200, acceptSample: 0, sourceRate: 0, sourceBurst: 0, budgetMark: 0x400, untrackedMark: 0x800, workloadCgroups: 0, vouchedUntil: Date.now() / 1000 + 3600, agentAway: false, netnsCookie: 0n, routedWorkloads: false, podMark: 0, judgedMark: JUDGED_MARK, deferMark: 0x2000, nameUidOwners: false, trackNew: false });
    // Fields are only appended to struct fast_config: an older object takes the part it knows.
    const size = (JSON.parse(bpftool(['map', 'show', 'pinned', join(maps, 'fast_config'), '-j'])) as { bytes_value: number }).bytes_value;
    bpftool(['map', 'update', 'pinned', join(maps, 'fast_config'), 'key', ...hex(new Uint8Array(4)), 'value', ...hex(config.subarray(0, size))]);
  }
  return { programs: program, maps };
}

/**
 * The routing namespace: the server's address on one end of a veth pair, forwarding on, a route to
 * ROUTED. Returns the interface's index, which the runs give as the segment's ingress.
 */
function routingNamespace(): number {
  const ip = (args: string[]) => execFileSync('ip', ['-n', NAMESPACE, ...args], { stdio: 'pipe' });
  execFileSync('ip', ['netns', 'add', NAMESPACE]);
  ip(['link', 'add', 'd0', 'type', 'veth', 'peer', 'name', 'd1']);
  ip(['addr', 'add', `${SERVER.address}/24`, 'dev', 'd0']);
  ip(['link', 'set', 'd0', 'up']);
  ip(['link', 'set', 'd1', 'up']);
  ip(['route', 'add', `${ROUTED}/32`, 'via', '10.213.99.3']);
  execFileSync('ip', ['netns', 'exec', NAMESPACE, 'sysctl', '-qw', 'net.ipv4.conf.all.forwarding=1']);
  return (JSON.parse(execFileSync('ip', ['-n', NAMESPACE, '-j', 'link', 'show', 'd0'], { encoding: 'utf8' })) as { ifindex: number }[])[0]!.ifindex;
}

/** struct __sk_buff for the runs: the segment came in on `ifindex` (ingress_ifindex at 36, ifindex at 40) and carries `mark` (at 8). */
function contextIn(ifindex: number, mark: number): string {
  const context = Buffer.alloc(192);
  context.writeUInt32LE(mark, 8);
  context.writeUInt32LE(ifindex, 36);
  context.writeUInt32LE(ifindex, 40);
  const file = join(scratch, `context-${mark}`);
  writeFileSync(file, context);
  return file;
}

/** The kernel's mean nanoseconds per run of `program` on `frame`, in the routing namespace. */
function nanoseconds(program: string, frame: Buffer, context: string): number {
  const file = join(scratch, 'frame');
  writeFileSync(file, frame);
  // nsenter, not `ip netns exec`, which remounts /sys and hides bpffs.
  const output = execFileSync('nsenter', [`--net=/var/run/netns/${NAMESPACE}`, 'bpftool', 'prog', 'run', 'pinned', program, 'data_in', file, 'ctx_in', context, 'repeat', String(REPEAT)], { encoding: 'utf8' });
  const mean = /duration \(average\): (\d+)ns/.exec(output)?.[1];
  if (mean === undefined) throw new Error(`bpftool prog run gave no duration: ${output}`);
  return Number(mean);
}

const flow = flowKey(SERVER.address, SERVER.port, CLIENT.address, CLIENT.port);
try {
  const ifindex = routingNamespace();
  const empty = join(load(emptyProgram(), 'empty', false).programs, 'synpass_ingress');
  const loaded = objects.map((object, index) => load(object, `object${index}`, true));
  process.stdout.write(`${REPEAT} runs a measurement, median of ${RUNS}; the programs and the baseline (a tc program that does nothing) take turns, so the VM's drift falls on all alike\n`);
  const port = Buffer.alloc(4);
  port.writeUInt32LE(SERVER.port);
  for (const { label, frame, fast, cloaked, program = 'synpass_ingress', mark = 0 } of CASES) {
    const context = contextIn(ifindex, mark);
    for (const { maps } of loaded) {
      if (fast) bpftool(['map', 'update', 'pinned', join(maps, 'fast_flows'), 'key', ...hex(flow), 'value', ...hex(untrackedFlow(join(maps, 'fast_flows')))]);
      else {
        try {
          bpftool(['map', 'delete', 'pinned', join(maps, 'fast_flows'), 'key', ...hex(flow)]);
        } catch {
          // Not there: the previous case was not a fast connection's either.
        }
      }
      bpftool(['map', 'update', 'pinned', join(maps, 'fast_cloak'), 'key', ...hex(port), 'value', ...hex(Uint8Array.of(cloaked === true ? 1 : 0))]);
    }
    const baseline: number[] = [];
    const totals: number[][] = loaded.map(() => []);
    for (let run = 0; run < RUNS; run++) {
      baseline.push(nanoseconds(empty, frame, context));
      // An object without the program (an older build's, before the egress one) has no figure.
      loaded.forEach(({ programs }, index) => {
        if (existsSync(join(programs, program))) totals[index]!.push(nanoseconds(join(programs, program), frame, context));
      });
    }
    const base = median(baseline);
    process.stdout.write(`${label} (baseline ${base} ns a run)\n`);
    objects.forEach((object, index) => {
      if (totals[index]!.length === 0) {
        process.stdout.write(`  ${object}: has no ${program}\n`);
        return;
      }
      const total = median(totals[index]!);
      process.stdout.write(`  ${object}: ${total} ns a run, the program's own ${total - base} ns (${(total / base).toFixed(2)}x the baseline)\n`);
    });
  }
} finally {
  execFileSync('ip', ['netns', 'del', NAMESPACE], { stdio: 'ignore' });
  for (const path of pinned) rmSync(path, { recursive: true, force: true });
  rmSync(scratch, { recursive: true, force: true });
}
