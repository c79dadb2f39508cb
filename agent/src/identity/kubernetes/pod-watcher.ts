// The pods on this node, kept current through the Kubernetes API: list, then watch from the
// list's resourceVersion (with bookmarks), re-list on 410 Gone, back off on errors. Each pod IP
// maps to attributes with provenance "k8s"; the agent gives a pod's traffic that pod's identity.
import { readFileSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createInterface } from 'node:readline';
import type { Attribute } from '../../token/identity-token.ts';
import { SynpassError } from '../../errors.ts';

export interface KubernetesAccess {
  /** https://host:port of the API server (http:// for tests). */
  server: string;
  token: string | null;
  ca: string | null;
}

/** In-cluster access from the service-account mount and the KUBERNETES_SERVICE_* variables. */
export function inClusterAccess(
  environment: NodeJS.ProcessEnv = process.env,
  mount = '/var/run/secrets/kubernetes.io/serviceaccount',
): KubernetesAccess {
  const host = environment.KUBERNETES_SERVICE_HOST;
  const port = environment.KUBERNETES_SERVICE_PORT ?? '443';
  if (host === undefined) throw new KubernetesError('not-in-cluster', 'KUBERNETES_SERVICE_HOST is not set: not running in a cluster (set kubernetes.apiServer)');
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    token: readFileSync(`${mount}/token`, 'utf8').trim(),
    ca: readFileSync(`${mount}/ca.crt`, 'utf8'),
  };
}

interface PodObject {
  metadata?: {
    name?: string;
    namespace?: string;
    resourceVersion?: string;
    labels?: Record<string, string>;
    ownerReferences?: { kind?: string; name?: string; controller?: boolean }[];
  };
  spec?: { nodeName?: string; serviceAccountName?: string };
  status?: { podIP?: string; podIPs?: { ip: string }[]; phase?: string; containerStatuses?: { imageID?: string }[] };
}

interface WatchEvent {
  type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR';
  object: PodObject & { code?: number };
}

const LABEL_KEY = /^[a-z0-9][a-z0-9._-]*$/;

export class KubernetesError extends SynpassError<'not-in-cluster' | 'http-status' | 'watch-error' | 'no-pod-list'> {
  override readonly name = 'KubernetesError';
}
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

function podIps(pod: PodObject): string[] {
  const ips = (pod.status?.podIPs ?? []).map((entry) => entry.ip);
  if (ips.length === 0 && pod.status?.podIP) ips.push(pod.status.podIP);
  return ips;
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
  private byName = new Map<string, string[]>();
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
    const url = new URL(path, this.options.access.server);
    const request = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return new Promise((resolve, reject) => {
      const req = request(
        url,
        {
          method: 'GET',
          headers: { accept: 'application/json', ...(this.options.access.token ? { authorization: `Bearer ${this.options.access.token}` } : {}) },
          ...(this.options.access.ca ? { ca: this.options.access.ca } : {}),
        },
        (response) => {
          if (response.statusCode !== 200) {
            response.resume();
            reject(new KubernetesError('http-status', `GET ${url.pathname}: HTTP ${response.statusCode ?? '?'}`, { status: response.statusCode ?? 0 }));
            return;
          }
          resolve(response);
        },
      );
      this.current = req;
      req.on('error', reject);
      req.end();
    });
  }

  private async list(): Promise<void> {
    const response = await this.open(this.path(false));
    let body = '';
    response.setEncoding('utf8');
    for await (const chunk of response) body += chunk as string;
    const list = JSON.parse(body) as { metadata?: { resourceVersion?: string }; items?: PodObject[] };
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
    for (const ip of this.byName.get(name) ?? []) this.byIp.delete(ip);
    this.byName.delete(name);
    if (type === 'DELETED' || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    const ips = podIps(pod);
    const attributes = podAttributes(pod);
    for (const ip of ips) this.byIp.set(ip, attributes);
    this.byName.set(name, ips);
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
