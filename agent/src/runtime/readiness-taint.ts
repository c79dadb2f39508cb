// A node registered with the readiness taint (kubelet --register-with-taints) runs no pod that
// does not tolerate it: pods start only once this agent judges their traffic. The agent takes the
// taint off its node when it runs, by a JSON patch that first tests the taint is still where it
// read it, so a concurrent edit of the node's taints costs a retry, never someone else's taint.
import { setTimeout as sleep } from 'node:timers/promises';
import { callApi, readJson, type KubernetesAccess } from '../identity/kubernetes/api.ts';

export const DEFAULT_READINESS_TAINT = 'synpass.io/agent-not-ready';

interface Taint {
  key?: string;
  value?: string;
  effect?: string;
}

export interface ReadinessTaintStatus {
  key: string;
  /** `removing` until the node answered; `removed` or `absent` (the node never had it) once done. */
  state: 'removing' | 'removed' | 'absent';
  attempts: number;
  lastError?: string;
}

export interface ReadinessTaintOptions {
  access: KubernetesAccess;
  nodeName: string;
  key: string;
  onError: (error: Error) => void;
  /** First retry delay; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

/** The JSON patch that removes each taint with `key`, each guarded by a test of what was read. */
export function taintRemoval(taints: readonly Taint[], key: string): object[] {
  const operations: object[] = [];
  for (let index = taints.length - 1; index >= 0; index -= 1) {
    if (taints[index]?.key !== key) continue;
    const path = `/spec/taints/${index}`;
    operations.push({ op: 'test', path, value: taints[index] }, { op: 'remove', path });
  }
  return operations;
}

export class ReadinessTaint {
  private current: ReadinessTaintStatus;
  private readonly stopped = new AbortController();
  private patchSent = false;

  constructor(private readonly options: ReadinessTaintOptions) {
    this.current = { key: options.key, state: 'removing', attempts: 0 };
  }

  get status(): ReadinessTaintStatus {
    return { ...this.current };
  }

  /** Retries with backoff until the node has no such taint or `stop()`; never throws. */
  async remove(): Promise<void> {
    let delay = this.options.backoffMs ?? 500;
    while (!this.stopped.signal.aborted) {
      this.current.attempts += 1;
      try {
        this.current.state = await this.removeOnce();
        delete this.current.lastError;
        return;
      } catch (error) {
        if (this.stopped.signal.aborted) return;
        this.current.lastError = (error as Error).message;
        this.options.onError(error as Error);
      }
      try {
        await sleep(delay, undefined, { signal: this.stopped.signal });
      } catch {
        return;
      }
      delay = Math.min(delay * 2, this.options.maxBackoffMs ?? 30_000);
    }
  }

  stop(): void {
    this.stopped.abort();
  }

  private async removeOnce(): Promise<'removed' | 'absent'> {
    const path = `/api/v1/nodes/${encodeURIComponent(this.options.nodeName)}`;
    const node = (await readJson(await callApi(this.options.access, 'GET', path).response)) as { spec?: { taints?: Taint[] } };
    const patch = taintRemoval(node.spec?.taints ?? [], this.options.key);
    // A patch whose answer was lost may have removed it.
    if (patch.length === 0) return this.patchSent ? 'removed' : 'absent';
    this.patchSent = true;
    const answer = callApi(this.options.access, 'PATCH', path, { contentType: 'application/json-patch+json', text: JSON.stringify(patch) });
    (await answer.response).resume();
    return 'removed';
  }
}
