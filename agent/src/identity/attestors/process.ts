// The local process behind a connection, as the kernel names it: NFQUEUE reports the owner
// (uid/gid) of the socket that sent a locally generated packet. The agent maps owners to
// workloads (`workloads[].uids`); this attestor vouches for the owner and its account name.
import { readFile } from 'node:fs/promises';
import type { Attribute } from '../../token/identity-token.ts';
import { attributes, type Attestor } from './attestor.ts';

export class ProcessAttestor implements Attestor {
  readonly name = 'process';
  readonly namespaces: readonly string[];
  constructor(
    private readonly uids: readonly number[],
    private readonly passwdPath = '/etc/passwd',
  ) {
    this.namespaces = uids.length === 0 ? [] : ['process'];
  }
  async attest(): Promise<Map<string, Attribute>> {
    if (this.uids.length === 0) return new Map();
    const passwd = await readFile(this.passwdPath, 'utf8').catch(() => '');
    const accounts = new Map(passwd.split('\n').map((line) => line.split(':')).map((fields) => [fields[2], fields[0]]));
    const users = this.uids.map((uid) => accounts.get(String(uid))).filter((user) => user !== undefined);
    return attributes(this.name, {
      'process.uid': this.uids.join(','),
      'process.user': users.length === this.uids.length ? users.join(',') : undefined,
    });
  }
}
