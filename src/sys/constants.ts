// Kernel constants and struct layouts for x86_64 Linux, under their C names.
// Every value here is checked against the system headers by test/layout.test.ts
// (native/layout.c prints the same names from <linux/if_tun.h>, <sys/socket.h>, ...).

export const C = {
  // fcntl.h
  O_RDWR: 0x2,
  O_CLOEXEC: 0x80000,
  F_GETFD: 1,
  F_SETFD: 2,
  F_GETFL: 3,
  FD_CLOEXEC: 1,
  // sys/socket.h
  AF_UNSPEC: 0,
  AF_UNIX: 1,
  AF_INET: 2,
  AF_NETLINK: 16,
  SOCK_STREAM: 1,
  SOCK_DGRAM: 2,
  SOCK_RAW: 3,
  SOCK_CLOEXEC: 0x80000,
  SOCK_NONBLOCK: 0x800,
  SOL_SOCKET: 1,
  SO_PEERCRED: 17,
  SO_PEERGROUPS: 59,
  // Linux 6.5+; Debian 12's headers (6.1) lack it, see native/layout.c.
  SO_PEERPIDFD: 77,
  SO_RCVTIMEO: 20,
  SO_SNDTIMEO: 21,
  SO_RCVBUF: 8,
  SCM_RIGHTS: 1,
  MSG_CTRUNC: 0x8,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
  MSG_CMSG_CLOEXEC: 0x40000000,
  // net/if.h, linux/if.h
  IFNAMSIZ: 16,
  IFF_UP: 0x1,
  // linux/if_tun.h
  IFF_TUN: 0x1,
  IFF_TAP: 0x2,
  IFF_NO_PI: 0x1000,
  IFF_MULTI_QUEUE: 0x100,
  IFF_VNET_HDR: 0x4000,
  IFF_TUN_EXCL: 0x8000,
  TUNSETIFF: 0x400454ca,
  TUNGETIFF: 0x800454d2,
  // linux/sockios.h
  SIOCGIFFLAGS: 0x8913,
  SIOCSIFFLAGS: 0x8914,
  SIOCGIFMTU: 0x8921,
  SIOCSIFMTU: 0x8922,
  SIOCSIFHWADDR: 0x8924,
  SIOCGIFHWADDR: 0x8927,
  SIOCGIFINDEX: 0x8933,
  SIOCETHTOOL: 0x8946,
  SIOCBRADDBR: 0x89a0,
  SIOCBRDELBR: 0x89a1,
  SIOCBRADDIF: 0x89a2,
  SIOCBRDELIF: 0x89a3,
  // linux/ethtool.h
  ETHTOOL_GDRVINFO: 0x3,
  // net/if_arp.h
  ARPHRD_ETHER: 1,
  // linux/netlink.h, linux/rtnetlink.h
  NETLINK_ROUTE: 0,
  RTMGRP_LINK: 1,
  NLMSG_ERROR: 2,
  NLMSG_DONE: 3,
  RTM_NEWLINK: 16,
  RTM_DELLINK: 17,
  RTM_GETLINK: 18,
  RTM_SETLINK: 19,
  NLM_F_ACK: 4,
  AF_BRIDGE: 7,
  IFLA_PROTINFO: 12,
  IFLA_BRPORT_ISOLATED: 33,
  NLA_F_NESTED: 0x8000,
  NLM_F_REQUEST: 1,
  NLM_F_DUMP: 0x300,
  // limits.h: the kernel's cap on supplementary groups (NGROUPS_MAX)
  NGROUPS_MAX: 65536,
  // errno.h (the ones we branch on)
  EAGAIN: 11,
  EINTR: 4,
  ENOBUFS: 105,
  EPROTO: 71,
  ENODEV: 19,
  EOPNOTSUPP: 95,
} as const;

/** sizeof and offsetof, named `struct.field` (offsets) and `sizeof struct` (sizes). */
export const LAYOUT = {
  'sizeof struct ifreq': 40,
  'ifreq.ifr_name': 0,
  'ifreq.ifr_flags': 16,
  'ifreq.ifr_ifindex': 16,
  'ifreq.ifr_mtu': 16,
  'ifreq.ifr_hwaddr': 16,
  'ifreq.ifr_data': 16,
  'sizeof struct sockaddr': 16,
  'sockaddr.sa_family': 0,
  'sockaddr.sa_data': 2,
  'sizeof struct msghdr': 56,
  'msghdr.msg_name': 0,
  'msghdr.msg_namelen': 8,
  'msghdr.msg_iov': 16,
  'msghdr.msg_iovlen': 24,
  'msghdr.msg_control': 32,
  'msghdr.msg_controllen': 40,
  'msghdr.msg_flags': 48,
  'sizeof struct iovec': 16,
  'iovec.iov_base': 0,
  'iovec.iov_len': 8,
  'sizeof struct cmsghdr': 16,
  'cmsghdr.cmsg_len': 0,
  'cmsghdr.cmsg_level': 8,
  'cmsghdr.cmsg_type': 12,
  'CMSG_LEN(0)': 16,
  'CMSG_SPACE(4)': 24,
  'sizeof struct ucred': 12,
  'ucred.pid': 0,
  'ucred.uid': 4,
  'ucred.gid': 8,
  'sizeof struct sockaddr_un': 110,
  'sockaddr_un.sun_family': 0,
  'sockaddr_un.sun_path': 2,
  'sizeof struct sockaddr_nl': 12,
  'sockaddr_nl.nl_family': 0,
  'sockaddr_nl.nl_pid': 4,
  'sockaddr_nl.nl_groups': 8,
  'sizeof struct nlmsghdr': 16,
  'nlmsghdr.nlmsg_len': 0,
  'nlmsghdr.nlmsg_type': 4,
  'nlmsghdr.nlmsg_flags': 6,
  'nlmsghdr.nlmsg_seq': 8,
  'nlmsghdr.nlmsg_pid': 12,
  'sizeof struct ifinfomsg': 16,
  'ifinfomsg.ifi_family': 0,
  'ifinfomsg.ifi_type': 2,
  'ifinfomsg.ifi_index': 4,
  'ifinfomsg.ifi_flags': 8,
  'sizeof struct nlattr': 4,
  'nlmsgerr.error': 0,
  'sizeof struct ethtool_drvinfo': 196,
  'ethtool_drvinfo.cmd': 0,
  'ethtool_drvinfo.driver': 4,
  'sizeof struct timeval': 16,
} as const;

/** CMSG_SPACE for a payload of n bytes: header plus payload rounded up to 8. */
export function CMSG_SPACE(n: number): number {
  return LAYOUT['sizeof struct cmsghdr'] + ((n + 7) & ~7);
}

/** CMSG_LEN for a payload of n bytes. */
export function CMSG_LEN(n: number): number {
  return LAYOUT['sizeof struct cmsghdr'] + n;
}
