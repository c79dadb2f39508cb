// The pods on this node, kept current through the Kubernetes API: list, then watch from the
// list's resourceVersion (with bookmarks), re-list on 410 Gone, back off on errors. Each pod IP
// maps to attributes with provenance "k8s"; the agent gives a pod's traffic that pod's identity.
// Pods on the host's network are the node's, not address workloads.
import type { IncomingMessage } from 'node:http';
import { createInterface } from 'node:readline';
import type { Attribute } from '../../token/identity-token.ts';
import { callApi, readJson, KubernetesError, type KubernetesAccess } from './api.ts';
import { canonicalAddress } from '../../datapath/addresses.ts';

interface PodObject {
  metadata?: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    ownerReferences?: { kind?: string; name?: string; controller?: boolean }[];
  };
  spec?: { nodeName?: string; serviceAccountName?: string; hostNetwork?: boolean };
  status?: { podIP?: string; podIPs?: { ip: string }[]; phase?: string; containerStatuses?: { imageID?: string }[] };
}

interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: PodObject & { code?: number };
}

const LABEL_KEY = /^[a-z0-9][a-z0-9._-]*$/;

/** The one attribute namespace (and attestor name) of pod attributes. */
export const POD_ATTRIBUTE_NAMESPACE = 'k8s';

/** The attributes a pod is known by; label keys that do not fit an attribute name are left out. */
export function podAttributes(pod: PodObject): Map<string, Attribute> {
  const attributes = new Map<string, Attribute>();
  const set = (name: string, value: string | undefined) => {
    if (value !== undefined && value !== '') attributes.set(name, { value, attestor: POD_ATTRIBUTE_NAMESPACE });
  };
  set('k8s.namespace', pod.metadata?.namespace);
  set('k8s.pod', pod.metadata?.name);
  set('k8s.service-account', pod.spec?.serviceAccountName ?? 'default');
  set('k8s.node', pod.spec?.nodeName);
  const owner = pod.metadata?.ownerReferences?.find((reference) => reference.controller) ?? pod.metadata?.ownerReferences?.[0];
  set('k8s.owner-kind', owner?.kind);
  set('k8s.owner-name', owner?.name);
  const digests = (pod.status?.containerStatuses ?? [])
    .map((container) => /@(sha256:[0-9a-f]{64})$/.exec(container.imageID ?? '')?.[1])
    .filter((digest): digest is string => digest !== undefined)
    .sort();
  if (digests.length > 0) set('k8s.image-digests', digests.join(','));
  for (const [key, value] of Object.entries(pod.metadata?.labels ?? {})) if (LABEL_KEY.test(key)) set(`k8s.label.${key}`, value);
  return attributes;
}

/** In the form the datapath writes a packet's addresses (IPv6 in full: the API server's `fd00::1` is `fd00:0:0:0:0:0:0:1`). */
function podIps(pod: PodObject): string[] {
  const ips = (pod.status?.podIPs ?? []).map((entry) => entry.ip);
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips.map(canonicalAddress);
}

export interface PodWatcherOptions {
  access: KubernetesAccess;
  nodeName: string;
  onError?: (error: Error) => void;
  /** First retry delay; doubles up to maxBackoffMs. */
  backoffMs?: number;
  maxBackoffMs?: number;
  watchTimeoutSeconds?: number;
  /** Called after the set of pods changed (a list or a watch event). */
  onChange?: () => void;
}

export class PodWatcher {
  /** Pod IP -> attributes. Replaced whole on re-list, edited in place by watch events. */
  private byIp = new Map<string, Map<string, Attribute>>();
  /** Pod (namespace/name) -> the addresses it was filed under, with what it was filed as. */
  private byName = new Map<string, { ips: string[]; attributes: Map<string, Attribute> }>();
  resourceVersion = '';
  lists = 0;
  watches = 0;
  private stopped = false;
  private current: { destroy(): void } | null = null;
  private ready: Promise<void>;
  private markReady: () => void = () => undefined;

  constructor(private readonly options: PodWatcherOptions) {
    this.ready = new Promise((resolve) => {
      this.markReady = resolve;
    });
  }

  attributesOf(ip: string): ReadonlyMap<string, Attribute> | undefined {
    return this.byIp.get(ip);
  }

  /** Every pod IP with its attributes. */
  entries(): [string, ReadonlyMap<string, Attribute>][] {
    return [...this.byIp];
  }

  get podCount(): number {
    return this.byName.size;
  }

  /** Starts the list/watch loop; resolves after the first successful list. */
  start(): Promise<void> {
    void this.loop();
    return this.ready;
  }

  stop(): void {
    this.stopped = true;
    this.current?.destroy();
  }

  private path(watch: boolean): string {
    const query = new URLSearchParams({ fieldSelector: `spec.nodeName=${this.options.nodeName}` });
    if (watch) {
      query.set('watch', '1');
      query.set('allowWatchBookmarks', 'true');
      query.set('resourceVersion', this.resourceVersion);
      query.set('timeoutSeconds', String(this.options.watchTimeoutSeconds ?? 300));
    }
    return `/api/v1/pods?${query.toString()}`;
  }

  private open(path: string): Promise<IncomingMessage> {
    const call = callApi(this.options.access, 'GET', path);
    this.current = call.request;
    return call.response;
  }

  private async list(): Promise<void> {
    const list = (await readJson(await this.open(this.path(false)))) as { metadata?: { resourceVersion?: string }; items?: PodObject[] };
    this.byIp = new Map();
    this.byName = new Map();
    for (const pod of list.items ?? []) this.apply('ADDED', pod);
    this.resourceVersion = list.metadata?.resourceVersion ?? '';
    this.lists += 1;
    this.options.onChange?.();
    this.markReady();
  }

  /** Follows one watch stream; returns 'relist' on 410 Gone, 'rewatch' when the stream ends. */
  private async watch(): Promise<'relist' | 'rewatch'> {
    const response = await this.open(this.path(true));
    this.watches += 1;
    const lines = createInterface({ input: response, crlfDelay: Infinity });
    for await (const line of lines) {
      if (line.trim() === '') continue;
      const event = JSON.parse(line) as WatchEvent;
      if (event.type === 'ERROR') {
        if (event.object.code === 410) return 'relist';
        throw new KubernetesError('watch-error', `watch error ${String(event.object.code)}`, { status: event.object.code ?? 0 });
      }
      if (event.type !== 'BOOKMARK') {
        this.apply(event.type, event.object);
        this.options.onChange?.();
      }
      // Bookmarks carry only a resourceVersion: resuming from it avoids a re-list.
      this.resourceVersion = event.object.metadata?.resourceVersion ?? this.resourceVersion;
    }
    return 'rewatch';
  }

  private apply(type: 'ADDED' | 'MODIFIED' | 'DELETED', pod: PodObject): void {
    const name = `${pod.metadata?.namespace ?? ''}/${pod.metadata?.name ?? ''}`;
    const previous = this.byName.get(name);
    // An address another pod took since (a terminating pod's, given to a new one) stays that pod's.
    for (const ip of previous?.ips ?? []) if (this.byIp.get(ip) === previous?.attributes) this.byIp.delete(ip);
    this.byName.delete(name);
    if (type === 'DELETED' || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    // A pod on the host's network (kube-proxy, a CNI agent, synpass itself) has the node's
    // addresses for its own: its connections are the node's, judged as the node's workloads
    // (by uid or cgroup). Filed by those addresses it would give every process of the node its
    // identity, and each such pod would take the address from the last.
    if (pod.spec?.hostNetwork === true) return;
    const ips = podIps(pod);
    const attributes = podAttributes(pod);
    for (const ip of ips) this.byIp.set(ip, attributes);
    this.byName.set(name, { ips, attributes });
  }

  private async loop(): Promise<void> {
    let delay = this.options.backoffMs ?? 500;
    let needList = true;
    while (!this.stopped) {
      try {
        if (needList) await this.list();
        needList = (await this.watch()) === 'relist';
        delay = this.options.backoffMs ?? 500;
      } catch (error) {
        if (this.stopped) return;
        this.options.onError?.(error as Error);
        needList = true;
        await new Promise((resolve) => setTimeout(resolve, delay));
        delay = Math.min(delay * 2, this.options.maxBackoffMs ?? 30_000);
      }
    }
  }
}
