// The local process behind a connection, as the kernel names it: NFQUEUE reports the owner
// (uid/gid) of the socket that sent a locally generated packet, the kernel fast path's sock_ops
// program the cgroup of the process that connected. The agent maps them to workloads
// (`workloads[].uids`, `workloads[].cgroups`); this attestor vouches for the owner, its account
// name and the cgroups.
import { readFile } from 'node:fs/promises';
import type { Attribute } from '../../token/identity-token.ts';
import { attributes, type Attestor } from './attestor.ts';

export class ProcessAttestor implements Attestor {
  readonly name = 'process';
  readonly namespaces: readonly string[];
  constructor(
    private readonly uids: readonly number[],
    private readonly cgroups: readonly string[] = [],
    private readonly passwdPath = '/etc/passwd',
  ) {
    this.namespaces = uids.length === 0 && cgroups.length === 0 ? [] : ['process'];
  }
  async attest(): Promise<Map<string, Attribute>> {
    const cgroup = this.cgroups.length === 0 ? undefined : this.cgroups.join(',');
    if (this.uids.length === 0) return attributes(this.name, { 'process.cgroup': cgroup });
    const passwd = await readFile(this.passwdPath, 'utf8').catch(() => '');
    const accounts = new Map(passwd.split('\n').map((line) => line.split(':')).map((fields) => [fields[2], fields[0]]));
    const users = this.uids.map((uid) => accounts.get(String(uid))).filter((user) => user !== undefined);
    return attributes(this.name, {
      'process.uid': this.uids.join(','),
      'process.user': users.length === this.uids.length ? users.join(',') : undefined,
      'process.cgroup': cgroup,
    });
  }
}
