// qdrive: the bench's stand-in for QEMU and for shell scripts. It runs helpers and commands
// the way a C program does (fork + execv + waitpid, no Node in between), so their timings carry
// no Node spawn overhead. Built by test/bench/bench.ts into its run dir with the system gcc.
//
//   qdrive helper N BR [-p] -- ARGV...   QEMU's net_bridge_run_helper (net/tap.c): socketpair,
//                                        fork, execv(ARGV + --use-vnet --fd=K --br=BR), recvmsg one
//                                        byte + one SCM_RIGHTS fd, waitpid. Timed until the helper
//                                        exited 0 with the TAP fd in our hand (QEMU waits for both).
//   qdrive iproute N BR NAME             ip tuntap add + ip link set master BR up, then
//                                        open+TUNSETIFF to get the fd; teardown: close + ip link del.
//   qdrive ioctl N BR                    the kernel floor in C: the daemon's calls for an open, no FFI.
//   qdrive run N [-p] -- ARGV...         fork + execv + waitpid of ARGV (stdout to /dev/null).
//   qdrive teardown N BR                 makes N TAPs as `ioctl` does and holds them; prints a line,
//                                        waits for a line on stdin, then closes them all (one after
//                                        another, as a process exit does) and prints a second line.
//
// One JSON line per iteration on stdout: {"ms":..,"close_ms":..,"ifname":".."}. With -p it reads
// one line from stdin before every iteration after the first (the caller paces the runs, e.g.
// until tapd has ended the previous lease). Exit status 0 only if every iteration succeeded.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sockios.h>
#include <net/if_arp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* The uid the floor's TAPs are owned by, as a lease's are by its caller (worker.ts FLOOR_OWNER). */
#define FLOOR_OWNER 65534

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what) {
  fprintf(stderr, "qdrive: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void pace(int on, int i) {
  char line[64];
  if (on && i > 0 && !fgets(line, sizeof line, stdin)) exit(0);
}

/* QEMU's recv_fd(): one byte, one fd. */
static int recv_fd(int c) {
  char msgbuf[CMSG_SPACE(sizeof(int))];
  char req[1];
  struct iovec iov = {.iov_base = req, .iov_len = sizeof req};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = msgbuf, .msg_controllen = sizeof msgbuf};
  ssize_t n = recvmsg(c, &msg, 0);
  if (n <= 0) return -1;
  struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
  if (!cmsg || cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) {
    errno = EINVAL;
    return -1;
  }
  int fd;
  memcpy(&fd, CMSG_DATA(cmsg), sizeof fd);
  return fd;
}

static void tap_name(int fd, char *out) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  if (ioctl(fd, TUNGETIFF, &ifr) < 0) strcpy(out, "?");
  else memcpy(out, ifr.ifr_name, IFNAMSIZ);
}

static void report(double ms, double close_ms, const char *ifname) {
  printf("{\"ms\":%.4f,\"close_ms\":%.4f,\"ifname\":\"%s\"}\n", ms, close_ms, ifname);
  fflush(stdout);
}

static int run_wait(char *const argv[], int devnull_out) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (devnull_out) {
      int dn = open("/dev/null", O_WRONLY);
      dup2(dn, 1);
    }
    execv(argv[0], argv);
    _exit(127);
  }
  int status;
  while (waitpid(pid, &status, 0) != pid) {
    if (errno != EINTR) die("waitpid");
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int helper_once(char **hargv, int hargc, const char *br, char *ifname) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) die("socketpair");
  char fd_buf[32], br_buf[6 + IFNAMSIZ + 64];
  snprintf(fd_buf, sizeof fd_buf, "--fd=%d", sv[1]);
  snprintf(br_buf, sizeof br_buf, "--br=%s", br);
  char *args[hargc + 4];
  for (int i = 0; i < hargc; i++) args[i] = hargv[i];
  args[hargc] = "--use-vnet";
  args[hargc + 1] = fd_buf;
  args[hargc + 2] = br_buf;
  args[hargc + 3] = NULL;
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    close(sv[0]);
    execv(args[0], args);
    _exit(1);
  }
  close(sv[1]);
  int fd;
  do fd = recv_fd(sv[0]);
  while (fd == -1 && errno == EINTR);
  close(sv[0]);
  int status;
  while (waitpid(pid, &status, 0) != pid) {
    if (errno != EINTR) die("waitpid");
  }
  if (fd < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "qdrive: helper failed (fd %d, status %d)\n", fd, status);
    if (fd >= 0) close(fd);
    return -1;
  }
  tap_name(fd, ifname);
  return fd;
}

static void ifr_ioctl(int s, unsigned long req, struct ifreq *ifr, const char *what) {
  if (ioctl(s, req, ifr) < 0) die(what);
}

/* One rtnetlink request and its answer (an ACK, or the RTM_NEWLINK of an RTM_GETLINK), as
   src/sys/rtnetlink.ts makes it: one bound socket kept for the process, send then recv. */
static int nl_fd = -1;
static unsigned nl_seq;

static void nl_request(void *msg, size_t len, const char *what) {
  static char reply[16384];
  if (nl_fd < 0) {
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    nl_fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (nl_fd < 0 || bind(nl_fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("rtnetlink socket");
  }
  struct nlmsghdr *h = msg;
  h->nlmsg_seq = ++nl_seq;
  if (send(nl_fd, msg, len, 0) < 0) die(what);
  ssize_t n = recv(nl_fd, reply, sizeof reply, 0);
  if (n < (ssize_t)sizeof(struct nlmsghdr)) die(what);
  struct nlmsghdr *r = (struct nlmsghdr *)reply;
  if (r->nlmsg_type == NLMSG_ERROR) {
    int err = ((struct nlmsgerr *)NLMSG_DATA(r))->error;
    if (err != 0) {
      errno = -err;
      die(what);
    }
  }
}

static void put_attr(struct nlmsghdr *h, unsigned short type, const void *data, unsigned short len) {
  struct rtattr *a = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
  a->rta_type = type;
  a->rta_len = RTA_LENGTH(len);
  memcpy(RTA_DATA(a), data, len);
  h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
}

static int ctl_fd = -1;

/* The daemon's kernel calls for a bridged open, in its order (src/daemon/open.ts: create,
   configure, verify): TUNSETIFF, TUNSETOWNER, index, one RTM_SETLINK (address, MTU, master,
   up), the bridge's MTU, one RTM_GETLINK. The bridge's index and MTU are known beforehand. */
static int br_index;
static unsigned br_mtu;

/* Before the timed runs, as the worker does: the bridge's index and MTU. */
static void bridge_info(const char *br) {
  struct ifreq b;
  if ((ctl_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) die("control socket");
  memset(&b, 0, sizeof b);
  strcpy(b.ifr_name, br);
  ifr_ioctl(ctl_fd, SIOCGIFINDEX, &b, "bridge index");
  br_index = b.ifr_ifindex;
  ifr_ioctl(ctl_fd, SIOCGIFMTU, &b, "bridge MTU");
  br_mtu = (unsigned)b.ifr_mtu;
}

static int ioctl_once(const char *br, char *ifname) {
  struct ifreq b;
  memset(&b, 0, sizeof b);
  strcpy(b.ifr_name, br);

  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "tap%d");
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_TUN_EXCL;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
  memcpy(ifname, ifr.ifr_name, IFNAMSIZ);
  if (ioctl(fd, TUNSETOWNER, (unsigned long)FLOOR_OWNER) < 0) die("TUNSETOWNER");
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, ifname);
  ifr_ioctl(ctl_fd, SIOCGIFINDEX, &ifr, "index");
  int index = ifr.ifr_ifindex;

  struct {
    struct nlmsghdr h;
    struct ifinfomsg i;
    char attrs[64];
  } req;
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.i);
  req.h.nlmsg_type = RTM_SETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  req.i.ifi_family = AF_UNSPEC;
  req.i.ifi_index = index;
  req.i.ifi_flags = IFF_UP;
  req.i.ifi_change = IFF_UP;
  unsigned char mac[6] = {0xfe, 0x54, 0x00, (unsigned char)rand(), (unsigned char)rand(), (unsigned char)rand()};
  unsigned master = (unsigned)br_index;
  put_attr(&req.h, IFLA_ADDRESS, mac, 6);
  put_attr(&req.h, IFLA_MTU, &br_mtu, 4);
  put_attr(&req.h, IFLA_MASTER, &master, 4);
  nl_request(&req, req.h.nlmsg_len, "RTM_SETLINK");

  ifr_ioctl(ctl_fd, SIOCGIFMTU, &b, "bridge MTU");
  if ((unsigned)b.ifr_mtu != br_mtu) {
    errno = EINVAL;
    die("bridge MTU moved");
  }
  memset(&req, 0, sizeof req);
  req.h.nlmsg_len = NLMSG_LENGTH(sizeof req.i);
  req.h.nlmsg_type = RTM_GETLINK;
  req.h.nlmsg_flags = NLM_F_REQUEST;
  req.i.ifi_family = AF_UNSPEC;
  req.i.ifi_index = index;
  nl_request(&req, req.h.nlmsg_len, "RTM_GETLINK");
  return fd;
}

static int iproute_once(const char *br, const char *name, char *ifname) {
  char *add[] = {"/usr/sbin/ip", "tuntap", "add", "dev", (char *)name, "mode", "tap", "vnet_hdr", NULL};
  char *set[] = {"/usr/sbin/ip", "link", "set", "dev", (char *)name, "master", (char *)br, "up", NULL};
  if (run_wait(add, 0) != 0) return -1;
  if (run_wait(set, 0) != 0) return -1;
  /* Now the fd: attach to the device ip made (as QEMU's -netdev tap,ifname=NAME,script=no would). */
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) die("open /dev/net/tun");
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, name);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF attach");
  strcpy(ifname, name);
  return fd;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: see the comment at the top of qdrive.c\n");
    return 2;
  }
  const char *mode = argv[1];
  int n = atoi(argv[2]);
  int paced = 0, dash = -1;
  for (int i = 3; i < argc; i++) {
    if (strcmp(argv[i], "-p") == 0) paced = 1;
    if (strcmp(argv[i], "--") == 0) {
      dash = i;
      break;
    }
  }
  srand(getpid());
  if (strcmp(mode, "teardown") == 0 || strcmp(mode, "ioctl") == 0) bridge_info(argv[3]);
  if (strcmp(mode, "teardown") == 0) {
    int *fds = calloc(n, sizeof *fds);
    char ifname[IFNAMSIZ + 1] = {0};
    double t0 = now_ms();
    for (int i = 0; i < n; i++) fds[i] = ioctl_once(argv[3], ifname);
    report(now_ms() - t0, 0, ifname);
    char line[64];
    if (!fgets(line, sizeof line, stdin)) return 0;
    t0 = now_ms();
    for (int i = 0; i < n; i++) close(fds[i]);
    report(0, now_ms() - t0, ifname);
    return 0;
  }
  for (int i = 0; i < n; i++) {
    pace(paced, i);
    char ifname[IFNAMSIZ + 1] = {0};
    double t0 = now_ms(), t1, t2;
    if (strcmp(mode, "helper") == 0) {
      if (dash < 0 || argc < 5) return 2;
      int fd = helper_once(argv + dash + 1, argc - dash - 1, argv[3], ifname);
      if (fd < 0) return 1;
      t1 = now_ms();
      close(fd);
      t2 = now_ms();
    } else if (strcmp(mode, "ioctl") == 0) {
      int fd = ioctl_once(argv[3], ifname);
      t1 = now_ms();
      close(fd);
      t2 = now_ms();
    } else if (strcmp(mode, "iproute") == 0) {
      int fd = iproute_once(argv[3], argv[4], ifname);
      if (fd < 0) return 1;
      t1 = now_ms();
      close(fd);
      char *del[] = {"/usr/sbin/ip", "link", "del", "dev", argv[4], NULL};
      if (run_wait(del, 0) != 0) return 1;
      t2 = now_ms();
    } else if (strcmp(mode, "run") == 0) {
      if (dash < 0) return 2;
      int rc = run_wait(argv + dash + 1, 1);
      t1 = t2 = now_ms();
      if (rc != 0) {
        fprintf(stderr, "qdrive: %s exited %d\n", argv[dash + 1], rc);
        return 1;
      }
    } else {
      fprintf(stderr, "qdrive: unknown mode %s\n", mode);
      return 2;
    }
    report(t1 - t0, t2 - t1, ifname);
  }
  return 0;
}
