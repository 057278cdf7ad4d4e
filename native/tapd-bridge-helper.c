/*
 * tapd-bridge-helper: a drop-in for qemu-bridge-helper that needs no setuid bit and no
 * capabilities. QEMU (net_bridge_run_helper) and libvirt's session mode run it with one end of a
 * socketpair as --fd=N and wait for exactly what qemu-bridge-helper's send_fd() sends: one byte
 * (0) carrying one SCM_RIGHTS fd, the TAP. We get that TAP from tapd (docs/protocol.md), as the
 * user QEMU runs as, so tapd's policy decides. C rather than Node: it runs once per NIC at VM
 * start, and Node's start-up was nearly all of its time.
 *
 * Exit status: 0 the TAP was sent, 1 it was not; the reason is one line on stderr, written
 * before QEMU's socket closes (at exit): libvirt stops reading stderr once its fd receive fails.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "tapd-reply.h"

#define DEFAULT_SOCKET "/run/tapd/tapd.sock"
#define TIMEOUT_S 30 /* src/client/client.ts DEFAULT_TIMEOUT_MS */
#define MAX_BRIDGE 64

static const char usage[] =
	"Usage: tapd-bridge-helper [--use-vnet] --fd=N --br=BRIDGE [--socket=PATH]\n"
	"\n"
	"QEMU's bridge helper, without setuid: asks tapd (as the user running QEMU) for a TAP on\n"
	"BRIDGE (a tapd network, bridge or uplink NIC name) and hands it to QEMU on fd N.\n"
	"QEMU runs it itself; use it as\n"
	"  qemu-system-x86_64 -netdev bridge,id=n0,br=br0,helper=/usr/bin/tapd-bridge-helper \\\n"
	"      -device virtio-net-pci,netdev=n0 ...\n"
	"or with another tapd socket (a helper= with a blank runs through sh -c):\n"
	"  -netdev \"bridge,id=n0,br=br0,helper=/usr/bin/tapd-bridge-helper --socket=/run/tapd/tapd.sock\"\n"
	"\n"
	"  --use-vnet       open the TAP with the virtio-net header (QEMU always asks)\n"
	"  --fd=N           the socket to send the TAP on (one byte and one SCM_RIGHTS fd)\n"
	"  --br=BRIDGE      where to attach the TAP\n"
	"  --socket=PATH    tapd's socket (default $TAPD_SOCKET, else /run/tapd/tapd.sock)\n"
	"\n"
	"Under sudo (root with $SUDO_UID set) it asks on behalf of that user, as tapctl does.\n"
	"\n"
	"Exit status: 0 the TAP was sent, 1 it was not (the reason is on stderr; QEMU shows it).\n";

/* Fds tapd sent us; closed before exit on every path (QEMU has its own copy of the one it gets). */
static int tap_fds[TAPD_MAX_QUEUES];
static int n_tap_fds;

static void close_taps(void)
{
	for (int i = 0; i < n_tap_fds; i++)
		close(tap_fds[i]);
	n_tap_fds = 0;
}

/*
 * One line on stderr, in one write(), then exit 1. Control characters in tapd's words cannot
 * reach the terminal: a line break (with the blanks around it) becomes one space, as tapctl's
 * errorLine does, any other control byte a '?'. QEMU's socket (--fd) is not closed here: exit
 * closes it, after the line is out.
 */
static _Noreturn void die(const char *fmt, ...)
{
	static char raw[8192], line[8192 + 32];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(raw, sizeof raw, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	size_t len = (size_t)n;
	if (len >= sizeof raw) {
		/* A longer line helps no one: cut at a character boundary and say so. */
		len = sizeof raw - 8;
		while (len > 0 && ((unsigned char)raw[len] & 0xC0) == 0x80)
			len--;
		memcpy(raw + len, " [...]", 7);
		len += 6;
	}
	size_t o = 0;
	const char prefix[] = "tapd-bridge-helper: ";
	memcpy(line, prefix, sizeof prefix - 1);
	o = sizeof prefix - 1;
	size_t start = o;
	for (size_t i = 0; i < len;) {
		unsigned char c = (unsigned char)raw[i];
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
			size_t j = i;
			int nl = 0;
			while (j < len && raw[j] && strchr(" \t\n\r\v\f", raw[j])) {
				nl |= raw[j] == '\n';
				j++;
			}
			if (!nl)
				memcpy(line + o, raw + i, j - i), o += j - i;
			else
				line[o++] = ' ';
			i = j;
		} else {
			line[o++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
			i++;
		}
	}
	while (o > start && line[o - 1] == ' ')
		o--;
	line[o++] = '\n';
	for (size_t w = 0; w < o;) {
		ssize_t r = write(STDERR_FILENO, line + w, o - w);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		w += (size_t)r;
	}
	close_taps();
	_exit(1);
}

/* "EPIPE (broken pipe)": the errno's name and libc's words, lower-case, as SystemError says it. */
static const char *errno_words(int e)
{
	static char buf[160];
	const char *name = strerrorname_np(e);
	char num[24];
	if (!name) {
		snprintf(num, sizeof num, "errno %d", e);
		name = num;
	}
	snprintf(buf, sizeof buf, "%s (%s)", name, strerror(e));
	for (char *c = buf + strlen(name); *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	return buf;
}

struct args {
	int help, use_vnet, fd;
	const char *bridge, *socket;
};

static int bridge_ok(const char *s)
{
	size_t n = strlen(s);
	if (n < 1 || n > MAX_BRIDGE)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("_.:@+-", c)))
			return 0;
	}
	return 1;
}

/*
 * The command line QEMU gives a bridge helper (net/tap.c, net_bridge_run_helper):
 *   HELPER --use-vnet --fd=N --br=BR              (helper= is a path: execv)
 *   sh -c "HELPER ARGS --use-vnet --fd=N --br=BR"   (helper= has a blank: extra words pass through)
 * libvirt passes --use-vnet --br=BR --fd=N. Parsed strictly: anything else is an error, so a
 * mistyped helper= string fails loudly.
 */
static void parse_args(int argc, char **argv, struct args *a)
{
	static const char *const names[] = { "--help", "-h", "--use-vnet", "--fd", "--br", "--socket" };
	unsigned seen = 0;
	int have_fd = 0;
	memset(a, 0, sizeof *a);
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *eq = strchr(arg, '='), *value = eq ? eq + 1 : NULL;
		size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
		int k = -1;
		for (int j = 0; j < (int)(sizeof names / sizeof names[0]); j++)
			if (strlen(names[j]) == nlen && strncmp(arg, names[j], nlen) == 0)
				k = j;
		if (k < 0)
			die("unknown argument \"%s\" (expected --use-vnet, --fd=N, --br=BRIDGE, --socket=PATH or --help)", arg);
		if (seen & (1u << k))
			die("%.*s given twice", (int)nlen, arg);
		seen |= 1u << k;
		switch (k) {
		case 0:
		case 1:
			if (value)
				die("%s takes no value", names[k]);
			a->help = 1;
			break;
		case 2:
			if (value)
				die("--use-vnet takes no value");
			a->use_vnet = 1;
			break;
		case 3: {
			size_t n = value ? strlen(value) : 0;
			int digits = n >= 1 && n <= 9;
			for (size_t j = 0; digits && j < n; j++)
				digits = value[j] >= '0' && value[j] <= '9';
			if (!digits)
				die("--fd=N needs a file descriptor number, got \"%s\"", arg);
			a->fd = atoi(value);
			if (a->fd <= 2)
				die("--fd=%d is standard input/output, not QEMU's socket", a->fd);
			have_fd = 1;
			break;
		}
		case 4:
			if (!value || !bridge_ok(value))
				die("--br=BRIDGE needs a bridge or network name, got \"%s\"", arg);
			a->bridge = value;
			break;
		case 5:
			if (!value || !*value)
				die("--socket=PATH needs a path");
			a->socket = value;
			break;
		}
	}
	if (a->help)
		return;
	if (!have_fd)
		die("missing --fd=N: QEMU runs this helper itself (-netdev bridge,br=BR,helper=PATH); see --help");
	if (!a->bridge)
		die("missing --br=BRIDGE; see --help");
}

/* sudo: root with SUDO_UID asks for that user, as tapctl does (src/cli/privileges.ts). -1: none. */
static long sudo_uid(void)
{
	const char *raw = getenv("SUDO_UID");
	if (geteuid() != 0 || !raw || !*raw)
		return -1;
	size_t n = strlen(raw);
	long uid = 0;
	for (size_t i = 0; i < n; i++) {
		if (raw[i] < '0' || raw[i] > '9' || n > 10)
			die("SUDO_UID=\"%s\" is not a uid", raw);
		uid = uid * 10 + (raw[i] - '0');
	}
	if (uid > 0xfffffffeL)
		die("SUDO_UID=\"%s\" is not a uid", raw);
	return uid == 0 ? -1 : uid;
}

static int connect_tapd(const char *path, const char *bridge)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	if (n == 0 || n > sizeof sa.sun_path - 1)
		die("no TAP on %s: socket path must be 1..%zu bytes: %s", bridge, sizeof sa.sun_path - 1, path);
	memcpy(sa.sun_path, path, n);
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die("no TAP on %s: create socket: %s", bridge, errno_words(errno));
	struct timeval tv = { .tv_sec = TIMEOUT_S };
	if (setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0)
		die("no TAP on %s: set receive timeout: %s", bridge, errno_words(errno));
	if (setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0)
		die("no TAP on %s: set send timeout: %s", bridge, errno_words(errno));
	int r;
	do
		r = connect(s, (struct sockaddr *)&sa, sizeof sa);
	while (r < 0 && errno == EINTR);
	if (r < 0) {
		int e = errno;
		if (e == ENOENT || e == ECONNREFUSED)
			die("no TAP on %s: tapd is not running (no daemon at %s); start it with: systemctl start tapd.socket", bridge, path);
		if (e == EACCES || e == EPERM)
			die("no TAP on %s: permission denied on %s; ask an admin to add you to group tapd (then log in again)", bridge, path);
		die("no TAP on %s: connect to %s: %s", bridge, path, errno_words(e));
	}
	return s;
}

static void send_request(int s, const struct args *a, long as_uid)
{
	char body[256], frame[4 + sizeof body];
	int n;
	/* --br is [A-Za-z0-9_.:@+-]{1,64}: nothing to escape. bridge_helper: QEMU picks the guest's
	 * MAC, and QEMU (our parent) is the lease's process. */
	if (as_uid >= 0)
		n = snprintf(body, sizeof body, "{\"v\":1,\"op\":\"open\",\"network\":\"%s\",\"vnet_hdr\":%s,\"bridge_helper\":true,\"as_uid\":%ld}",
			     a->bridge, a->use_vnet ? "true" : "false", as_uid);
	else
		n = snprintf(body, sizeof body, "{\"v\":1,\"op\":\"open\",\"network\":\"%s\",\"vnet_hdr\":%s,\"bridge_helper\":true}",
			     a->bridge, a->use_vnet ? "true" : "false");
	if (n < 0 || (size_t)n >= sizeof body)
		die("no TAP on %s: request too long", a->bridge);
	frame[0] = (char)((uint32_t)n >> 24);
	frame[1] = (char)((uint32_t)n >> 16);
	frame[2] = (char)((uint32_t)n >> 8);
	frame[3] = (char)n;
	memcpy(frame + 4, body, (size_t)n);
	size_t total = 4 + (size_t)n;
	for (size_t off = 0; off < total;) {
		ssize_t w = send(s, frame + off, total - off, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			die("no TAP on %s: send request: %s", a->bridge, errno_words(errno));
		off += (size_t)w;
	}
}

/*
 * Reads exactly `len` bytes into buf with recvmsg() only (a plain read() would make the kernel
 * drop the fds), keeping every fd that rides along. Fds past TAPD_MAX_QUEUES, or a truncated
 * control message, fail the request once the bytes are in (the fds are closed either way).
 */
static void recv_exact(int s, unsigned char *buf, size_t len, const char *bridge, int *truncated)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * TAPD_MAX_QUEUES)];
	} control;
	for (size_t got = 0; got < len;) {
		struct iovec iov = { .iov_base = buf + got, .iov_len = len - got };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
		ssize_t r = recvmsg(s, &msg, MSG_CMSG_CLOEXEC);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				die("no TAP on %s: tapd did not answer in time; check that it is running (systemctl status tapd)", bridge);
			die("no TAP on %s: read reply from tapd: %s", bridge, errno_words(errno));
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
			if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
				continue;
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
				if (n_tap_fds < TAPD_MAX_QUEUES) {
					tap_fds[n_tap_fds++] = fd;
				} else {
					close(fd);
					*truncated = 1;
				}
			}
		}
		if (msg.msg_flags & MSG_CTRUNC)
			*truncated = 1;
		if (r == 0)
			die("no TAP on %s: tapd closed the connection without a reply", bridge);
		got += (size_t)r;
	}
}

/* Exactly what qemu-bridge-helper's send_fd() sends: one 0 byte with one SCM_RIGHTS fd. */
static void send_fd(int c, int fd)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} control;
	char req[1] = { 0x00 };
	struct iovec iov = { .iov_base = req, .iov_len = sizeof req };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
	memset(&control, 0, sizeof control);
	struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof fd);
	msg.msg_controllen = cmsg->cmsg_len;
	memcpy(CMSG_DATA(cmsg), &fd, sizeof fd);
	ssize_t r;
	/* MSG_NOSIGNAL: if QEMU is gone, say so instead of dying of SIGPIPE. */
	do
		r = sendmsg(c, &msg, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		die("pass the TAP to QEMU on fd %d: %s", c, errno_words(errno));
	if (r != 1)
		die("QEMU's socket took %zd bytes instead of 1", r);
}

int main(int argc, char **argv)
{
	struct args a;
	/* A reader gone from stderr or a socket must not kill us before the rest is cleaned up. */
	signal(SIGPIPE, SIG_IGN);
	parse_args(argc, argv, &a);
	if (a.help) {
		fputs(usage, stdout);
		return fflush(stdout) == 0 ? 0 : 1;
	}
	struct stat st;
	if (fstat(a.fd, &st) < 0 || !S_ISSOCK(st.st_mode))
		die("--fd=%d is not an open socket; QEMU runs this helper itself (-netdev bridge,br=BR,helper=PATH)", a.fd);
	const char *env = getenv("TAPD_SOCKET");
	const char *path = a.socket ? a.socket : env && *env ? env : DEFAULT_SOCKET;
	long as_uid = sudo_uid();

	int s = connect_tapd(path, a.bridge);
	send_request(s, &a, as_uid);

	unsigned char hdr[4];
	int truncated = 0;
	recv_exact(s, hdr, sizeof hdr, a.bridge, &truncated);
	uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (len == 0)
		die("no TAP on %s: empty frame", a.bridge);
	/* Checked before a byte of the body is read or any memory is set aside for it. */
	if (len > TAPD_MAX_REPLY_BYTES)
		die("no TAP on %s: frame of %u bytes is over the limit of %u", a.bridge, len, TAPD_MAX_REPLY_BYTES);
	unsigned char *body = malloc(len);
	char *scratch = malloc((size_t)len + 1);
	if (!body || !scratch)
		die("no TAP on %s: out of memory for a %u-byte reply", a.bridge, len);
	recv_exact(s, body, len, a.bridge, &truncated);
	close(s);
	if (truncated)
		die("no TAP on %s: the daemon sent more fds than expected; they were closed", a.bridge);

	struct tapd_reply reply;
	size_t where = 0;
	const char *bad = tapd_parse_reply(body, len, scratch, &reply, &where);
	if (bad)
		die("no TAP on %s: tapd sent a malformed reply (%s at byte %zu of %u)", a.bridge, bad, where, len);
	if (!reply.ok)
		die("no TAP on %s: %s", a.bridge, *reply.message ? reply.message : "tapd refused the request");
	if (reply.queues != n_tap_fds)
		die("no TAP on %s: expected %ld TAP fds from tapd, got %d", a.bridge, reply.queues, n_tap_fds);

	send_fd(a.fd, tap_fds[0]);
	/* QEMU has its own copy now; ours would only keep the device alive after QEMU exits. */
	close_taps();
	return 0;
}
