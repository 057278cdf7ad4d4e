// Accounts through NSS, for real: a user and a group that exist only in libnss-extrausers'
// /var/lib/extrausers, configured in a private mount namespace (a bind-mounted nsswitch.conf and
// a tmpfs; nothing global changes). The library finds them; so do tapd (as_uid) and tapctl
// (sudo, list) as commands. Also the struct layouts and libc constants nss.ts and the exec
// path hard-code, checked against the C headers.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIBC_C } from '../../src/sys/libc.js';
import { NSS_LAYOUT } from '../../src/sys/nss.js';
import { DIST, Netns, ROOT } from '../helpers/netns.js';

const UID = 4242;
const GID = 4242;
const EXTRA_GID = 4243;

let dir: string;

beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'tapd-nss-'));
  chmodSync(dir, 0o755);
  writeFileSync(path.join(dir, 'nsswitch.conf'), 'passwd: files extrausers\ngroup: files extrausers\nshadow: files\n');
  writeFileSync(path.join(dir, 'passwd'), `ldapuser:x:${UID}:${GID}:LDAP-only user:/home/ldapuser:/bin/sh\n`);
  writeFileSync(path.join(dir, 'group'), `ldapuser:x:${GID}:\nldapgrp:x:${EXTRA_GID}:ldapuser\n`);
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Runs `script` (sh) in a private mount namespace where NSS also reads the extrausers files. */
function withExtrausers(script: string, timeout = 60_000) {
  const setup = [
    'set -e',
    `mount --bind ${dir}/nsswitch.conf /etc/nsswitch.conf`,
    'mkdir -p /var/lib/extrausers',
    'mount -t tmpfs -o mode=0755 tmpfs /var/lib/extrausers',
    `cp ${dir}/passwd ${dir}/group /var/lib/extrausers/`,
    'set +e',
  ].join('\n');
  return spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${setup}\n${script}`], { encoding: 'utf8', timeout });
}

describe('NSS', () => {
  it('the C headers agree with NSS_LAYOUT and LIBC_C', () => {
    const c = `#include <pwd.h>\n#include <grp.h>\n#include <stddef.h>\n#include <stdio.h>\n#include <fcntl.h>\n#include <signal.h>\n#include <errno.h>
int main(void) {
  printf("{\\"sizeof struct passwd\\":%zu,\\"passwd.pw_name\\":%zu,\\"passwd.pw_uid\\":%zu,\\"passwd.pw_gid\\":%zu,\\"passwd.pw_dir\\":%zu,",
    sizeof(struct passwd), offsetof(struct passwd, pw_name), offsetof(struct passwd, pw_uid), offsetof(struct passwd, pw_gid), offsetof(struct passwd, pw_dir));
  printf("\\"sizeof struct group\\":%zu,\\"group.gr_name\\":%zu,\\"group.gr_gid\\":%zu,", sizeof(struct group), offsetof(struct group, gr_name), offsetof(struct group, gr_gid));
  printf("\\"F_SETFL\\":%d,\\"F_DUPFD_CLOEXEC\\":%d,\\"O_NONBLOCK\\":%d,\\"SIGPIPE\\":%d,\\"SIGXFSZ\\":%d,\\"SIG_DFL\\":%ld,\\"SIG_SETMASK\\":%d,\\"ERANGE\\":%d,\\"ENOEXEC\\":%d}\\n",
    F_SETFL, F_DUPFD_CLOEXEC, O_NONBLOCK, SIGPIPE, SIGXFSZ, (long)SIG_DFL, SIG_SETMASK, ERANGE, ENOEXEC);
  return 0;
}\n`;
    const src = path.join(dir, 'layout.c');
    const bin = path.join(dir, 'layout');
    writeFileSync(src, c);
    execFileSync('gcc', ['-D_GNU_SOURCE', '-Wall', '-Werror', '-o', bin, src]);
    expect(JSON.parse(execFileSync(bin, { encoding: 'utf8' }))).toEqual({ ...NSS_LAYOUT, ...LIBC_C });
  });

  it('common/accounts finds a user and groups that only NSS knows; file lookups stay file lookups', () => {
    const probe = `
      const a = await import(${JSON.stringify(path.join(DIST, 'common/accounts.js'))});
      console.log(JSON.stringify({
        byUid: a.getpwuid(${UID}), byName: a.getpwnam('ldapuser'), lookup: a.lookupUser('ldapuser')?.uid,
        group: a.getgrnam('ldapgrp'), groups: a.groupsOf(a.getpwuid(${UID})),
        fileOnly: a.getpwuid(${UID}, '/etc/passwd') ?? null, missing: a.getpwuid(4249) ?? null, noGroup: a.getgrnam('no-such-group') ?? null,
      }));`;
    const r = withExtrausers(`exec node --input-type=module -e '${probe.replaceAll("'", "'\\''")}'`);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      byUid: { name: 'ldapuser', uid: UID, gid: GID, home: '/home/ldapuser' },
      byName: { name: 'ldapuser', uid: UID, gid: GID, home: '/home/ldapuser' },
      lookup: UID, group: EXTRA_GID, groups: [GID, EXTRA_GID], fileOnly: null, missing: null, noGroup: null,
    });
  });

  it('sudo tapctl for an NSS-only user: tapd opens as_uid for it, the emulator runs as it, list names it', async () => {
    const ns = Netns.create('nss');
    const work = mkdtempSync(path.join(os.tmpdir(), 'tapd-nss-run-'));
    try {
      chmodSync(work, 0o755);
      ns.addBridge('br0', '02:00:00:00:00:01');
      writeFileSync(path.join(work, 'tapd.conf'), `network lan bridge br0\npermit ${UID} on lan\n`);
      const sock = path.join(work, 'tapd.sock');
      mkdirSync(path.join(work, 'out'), { mode: 0o755 });
      chownSync(path.join(work, 'out'), UID, GID);
      const report = path.join(work, 'out/report');
      const tapctl = `ip netns exec ${ns.name} node ${path.join(DIST, 'cli/tapctl.js')} --socket ${sock}`;
      const script = `
        ip netns exec ${ns.name} node ${path.join(DIST, 'cli/tapd.js')} --config ${work}/tapd.conf --socket ${sock} --state-dir ${work}/state >${work}/tapd.log 2>&1 &
        tapd=$!
        i=0; while [ ! -S ${sock} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
        FAKE_OUT=${report} FAKE_MODE=wait SUDO_UID=${UID} SUDO_GID=${GID} ${tapctl} qemu -b lan --qemu ${path.join(ROOT, 'test/fixtures/tapctl/fake-emulator.sh')} &
        vm=$!
        i=0; while [ ! -f ${report} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
        ${tapctl} list
        echo "LIST-STATUS $?"
        kill $vm; wait $vm
        kill $tapd; wait $tapd
        cat ${report}
      `;
      const r = withExtrausers(script, 90_000);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^LIST-STATUS 0$/m);
      expect(r.stdout).toMatch(/^[0-9a-f]+\s+tap[0-9a-f]{8}\s+lan\s+br0\s+52:54:00\S+\s+ldapuser\s+\d+\s+\d+s$/m);
      expect(r.stdout).toMatch(new RegExp(`^ID ${UID} ${GID} ${GID} ${EXTRA_GID}$`, 'm'));
    } finally {
      ns.destroy();
      rmSync(work, { recursive: true, force: true });
    }
  });
});
