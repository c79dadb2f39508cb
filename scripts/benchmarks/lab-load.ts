// What the benchmark drivers share: running load.ts inside a lab host (the lab's web host, or
// any namespace), the agents' log level, medians, and how their tables print numbers.
import type { Lab, NetnsProcess } from '../lib/lab.ts';

const LOAD = new URL('./load.ts', import.meta.url).pathname;

/**
 * Agents started from here on log warnings (drops) only, unless SYNPASS_LOG_LEVEL says otherwise:
 * an accepted-connection line costs the agent about as much as a trip, and benchmarks measure
 * the datapath.
 */
export function agentsLogWarningsOnly(): void {
  process.env.SYNPASS_LOG_LEVEL ??= 'warn';
}

/** Starts a command where the load runs (a namespace, and its cgroup in a kernel lab). */
export type Launch = (command: string[]) => NetnsProcess;

/** Runs one load.ts mode in web and returns the JSON line it prints. */
export async function runLoad(lab: Lab, args: string[]): Promise<Record<string, number>> {
  return runLoadIn((command) => lab.spawn('web', command), args);
}

/** Runs one load.ts mode where `launch` starts it and returns the JSON line it prints. */
export async function runLoadIn(launch: Launch, args: string[]): Promise<Record<string, number>> {
  const child = launch([process.execPath, '--import', 'tsx', LOAD, ...args]);
  const line = await child.waitFor(() => true, 120_000);
  await child.exited;
  return line as Record<string, number>;
}

/** Starts load.ts's accept-and-close server in api; resolves once it listens, with what stops it. */
export async function startLoadServer(lab: Lab, port: number): Promise<{ stop(): Promise<void> }> {
  return startLoadServerIn((command) => lab.spawn('api', command), port);
}

/** Starts load.ts's accept-and-close server where `launch` starts it; resolves once it listens, with what stops it. */
export async function startLoadServerIn(launch: Launch, port: number): Promise<{ stop(): Promise<void> }> {
  const server = launch([process.execPath, '--import', 'tsx', LOAD, 'server', String(port)]);
  await server.waitFor((l) => l.listening === true);
  return {
    stop: async () => {
      await server.stop();
    },
  };
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

/** A number to `digits` places, or '-' for none (a mode that did not run). */
export function fmt(value: number | undefined, digits = 0): string {
  return value === undefined || Number.isNaN(value) ? '-' : value.toFixed(digits);
}

/** A ratio, or '-' for one against a mode that did not run. */
export function times(value: number | undefined, digits: number): string {
  const text = fmt(value, digits);
  return text === '-' ? text : `${text}x`;
}

/** An added amount, with its sign either way. */
export function signed(value: number | undefined): string {
  return value !== undefined && value >= 0 ? `+${fmt(value)}` : fmt(value);
}
