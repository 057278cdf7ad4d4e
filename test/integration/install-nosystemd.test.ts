// scripts/install.sh as a live install (no DESTDIR) on a host without systemd and without
// systemctl, then scripts/uninstall.sh --purge. The "host" is this one seen through a private
// mount namespace: /usr and /etc are overlays whose writes land in a temp directory, /run is
// an empty tmpfs (so no /run/systemd/system), and /usr/bin/systemctl is deleted in the overlay.
// The host's own /usr, /etc and /run are never written.
import { spawnSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/netns.js';

const isRoot = process.getuid?.() === 0;
const temps: string[] = [];

/** Files (not directories) an overlay's upper layer holds: what the scripts wrote or deleted. */
function upperFiles(upper: string): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(p, n));
    else out.push('/' + relative(upper, p));
  };
  walk(upper);
  return out;
}

describe.skipIf(!isRoot)('install.sh and uninstall.sh on a host without systemd', () => {
  afterAll(() => {
    for (const d of temps) rmSync(d, { recursive: true, force: true });
  });

  it('installs, says how to start tapd without systemd, and uninstall --purge removes it all', () => {
    const t = mkdtempSync(join(tmpdir(), 'tapd-nosd-'));
    temps.push(t);
    for (const d of ['usr-up', 'usr-work', 'etc-up', 'etc-work']) mkdirSync(join(t, d));
    const script = `
      set -e
      mount -t overlay overlay -o lowerdir=/usr,upperdir=${t}/usr-up,workdir=${t}/usr-work /usr
      mount -t overlay overlay -o lowerdir=/etc,upperdir=${t}/etc-up,workdir=${t}/etc-work /etc
      mount -t tmpfs -o mode=0755 tmpfs /run
      rm -f /usr/bin/systemctl
      echo "== install"
      sh ${ROOT}/scripts/install.sh
      echo "== after install"
      id tapd
      ls /usr/lib/tapd/tapd-run /usr/share/man/man8/tapd.8.gz /usr/share/bash-completion/completions/tapctl
      # What \`systemctl enable tapd.socket\` makes (done offline, e.g. before the host moved off systemd).
      mkdir -p /etc/systemd/system/sockets.target.wants
      ln -s /usr/lib/systemd/system/tapd.socket /etc/systemd/system/sockets.target.wants/tapd.socket
      echo "== uninstall"
      sh ${ROOT}/scripts/uninstall.sh --purge
      echo "== after uninstall"
      if id tapd 2>/dev/null; then echo "user tapd still there"; fi`;
    const r = spawnSync('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', script], { encoding: 'utf8', timeout: 300_000, cwd: '/' });
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const install = r.stdout.slice(r.stdout.indexOf('== install'), r.stdout.indexOf('== after install'));
    expect(install).toMatch(/created {4}user tapd/);
    expect(install).toContain('systemd is not running here');
    expect(install).toContain('/usr/lib/tapd/tapd-run');
    expect(install).toContain('setpriv --reuid tapd --regid tapd --init-groups --inh-caps -all,+net_admin');
    expect(install).not.toContain('systemctl enable');
    const uninstall = r.stdout.slice(r.stdout.indexOf('== uninstall'));
    expect(uninstall).toContain('removed    /etc/systemd/system/sockets.target.wants/tapd.socket');
    expect(uninstall).toContain('removed    user tapd');
    expect(uninstall).not.toContain('user tapd still there');

    // Nothing left: /usr's upper layer holds only the whiteout of systemctl; /etc's only the
    // account files, rewritten by useradd/userdel with their original content.
    expect(upperFiles(join(t, 'usr-up'))).toEqual(['/bin/systemctl']);
    // (.pwd.lock: shadow's lock file, which useradd opens for writing.)
    const etc = upperFiles(join(t, 'etc-up')).filter((f) => !/^\/((passwd|group|shadow|gshadow)-|\.pwd\.lock)$/.test(f));
    for (const f of etc) {
      expect(['/passwd', '/group', '/shadow', '/gshadow', '/subuid', '/subgid'], f).toContain(f);
      if (existsSync(`/etc${f}`)) expect(readFileSync(join(t, 'etc-up', f), 'utf8'), f).toBe(readFileSync(`/etc${f}`, 'utf8'));
    }
    expect(existsSync(join(t, 'etc-up/tapd'))).toBe(false);
  }, 300_000);
});
