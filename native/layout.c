/* Prints, as JSON, the kernel constants and struct layouts that src/sys/constants.ts
 * hard-codes, taken from the system headers. test/integration/layout.test.ts compiles and runs it
 * and fails on any difference. Names are the same strings as in constants.ts. */
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <errno.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/time.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <linux/if_tun.h>
#include <linux/sockios.h>
#include <linux/ethtool.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/if_bridge.h>
#include <sys/inotify.h>

static int first = 1;
static void emit(const char *name, long value) {
  printf("%s\n  \"%s\": %ld", first ? "{" : ",", name, value);
  first = 0;
}
#define K(name) emit(#name, (long)(name))
#define SZ(type) emit("sizeof struct " #type, (long)sizeof(struct type))
#define OFF(type, field) emit(#type "." #field, (long)offsetof(struct type, field))

int main(void) {
  K(O_RDWR); K(O_CLOEXEC); K(F_GETFD); K(F_SETFD); K(F_GETFL); K(FD_CLOEXEC);
  K(AF_UNSPEC); K(AF_UNIX); K(AF_INET); K(AF_NETLINK); K(SOCK_STREAM); K(SOCK_DGRAM); K(SOCK_RAW);
  K(SOCK_CLOEXEC); K(SOCK_NONBLOCK); K(SOL_SOCKET); K(SO_PEERCRED); K(SO_PEERGROUPS);
  K(NGROUPS_MAX);
#ifdef SO_PEERPIDFD
  K(SO_PEERPIDFD);
#else
  /* Headers older than Linux 6.5 (Debian 12 ships 6.1): asm-generic/socket.h says 77 since 6.5. */
  emit("SO_PEERPIDFD", 77);
#endif
  K(SO_RCVTIMEO); K(SO_SNDTIMEO); K(SO_RCVBUF); K(SCM_RIGHTS); K(MSG_CTRUNC); K(MSG_DONTWAIT);
  K(MSG_NOSIGNAL); K(MSG_CMSG_CLOEXEC);
  K(IFNAMSIZ); K(IFF_UP);
  K(IFF_TUN); K(IFF_TAP); K(IFF_NO_PI); K(IFF_MULTI_QUEUE); K(IFF_VNET_HDR); K(IFF_TUN_EXCL);
  K(TUNSETIFF); K(TUNGETIFF); K(TUNSETPERSIST); K(TUNSETOWNER); K(TUNSETGROUP);
  K(SIOCGIFFLAGS); K(SIOCSIFFLAGS); K(SIOCGIFMTU); K(SIOCSIFMTU); K(SIOCSIFHWADDR);
  K(SIOCGIFHWADDR); K(SIOCGIFINDEX); K(SIOCETHTOOL);
  K(SIOCBRADDBR); K(SIOCBRDELBR); K(SIOCBRADDIF); K(SIOCBRDELIF);
  K(ETHTOOL_GDRVINFO); K(ARPHRD_ETHER);
  K(NETLINK_ROUTE); K(RTMGRP_LINK); K(NLMSG_ERROR); K(NLMSG_DONE);
  K(RTM_NEWLINK); K(RTM_DELLINK); K(RTM_GETLINK); K(RTM_SETLINK); K(NLM_F_ACK); K(AF_BRIDGE); K(IFLA_PROTINFO); K(IFLA_BRPORT_ISOLATED); K(NLA_F_NESTED); K(NLM_F_REQUEST); K(NLM_F_DUMP);
  K(IFLA_ADDRESS); K(IFLA_IFNAME); K(IFLA_MTU); K(IFLA_MASTER); K(IFLA_LINKINFO); K(IFLA_INFO_KIND);
  K(IFLA_INFO_DATA); K(IFLA_TUN_OWNER); K(IFLA_TUN_GROUP); K(IFLA_TUN_PERSIST); K(IFLA_TUN_MULTI_QUEUE);
  K(IFLA_TUN_NUM_QUEUES); K(IFLA_TUN_NUM_DISABLED_QUEUES);
  K(IFLA_LINK); K(IFLA_AF_SPEC); K(NLM_F_CREATE); K(NLM_F_EXCL);
  K(IFLA_MACVLAN_MODE); K(MACVLAN_MODE_PRIVATE); K(MACVLAN_MODE_VEPA); K(MACVLAN_MODE_BRIDGE); K(MACVLAN_MODE_PASSTHRU);
  K(IFLA_BR_VLAN_FILTERING); K(IFLA_BRIDGE_VLAN_INFO); K(BRIDGE_VLAN_INFO_PVID); K(BRIDGE_VLAN_INFO_UNTAGGED);
  K(IN_OPEN); K(IN_CLOSE_WRITE); K(IN_CLOSE_NOWRITE); K(IN_Q_OVERFLOW); K(IN_IGNORED); K(IN_NONBLOCK); K(IN_CLOEXEC);
  K(EAGAIN); K(EINTR); K(ENOBUFS); K(EPROTO); K(ENODEV); K(EOPNOTSUPP); K(ENOENT); K(EACCES); K(EEXIST); K(EALREADY); K(EISCONN);

  SZ(ifreq); OFF(ifreq, ifr_name); OFF(ifreq, ifr_flags); OFF(ifreq, ifr_ifindex);
  OFF(ifreq, ifr_mtu); OFF(ifreq, ifr_hwaddr); OFF(ifreq, ifr_data);
  SZ(sockaddr); OFF(sockaddr, sa_family); OFF(sockaddr, sa_data);
  SZ(msghdr); OFF(msghdr, msg_name); OFF(msghdr, msg_namelen); OFF(msghdr, msg_iov);
  OFF(msghdr, msg_iovlen); OFF(msghdr, msg_control); OFF(msghdr, msg_controllen); OFF(msghdr, msg_flags);
  SZ(iovec); OFF(iovec, iov_base); OFF(iovec, iov_len);
  SZ(cmsghdr); OFF(cmsghdr, cmsg_len); OFF(cmsghdr, cmsg_level); OFF(cmsghdr, cmsg_type);
  emit("CMSG_LEN(0)", (long)CMSG_LEN(0)); emit("CMSG_SPACE(4)", (long)CMSG_SPACE(4));
  SZ(ucred); OFF(ucred, pid); OFF(ucred, uid); OFF(ucred, gid);
  SZ(sockaddr_un); OFF(sockaddr_un, sun_family); OFF(sockaddr_un, sun_path);
  SZ(sockaddr_nl); OFF(sockaddr_nl, nl_family); OFF(sockaddr_nl, nl_pid); OFF(sockaddr_nl, nl_groups);
  SZ(nlmsghdr); OFF(nlmsghdr, nlmsg_len); OFF(nlmsghdr, nlmsg_type); OFF(nlmsghdr, nlmsg_flags);
  OFF(nlmsghdr, nlmsg_seq); OFF(nlmsghdr, nlmsg_pid);
  SZ(ifinfomsg); OFF(ifinfomsg, ifi_family); OFF(ifinfomsg, ifi_type); OFF(ifinfomsg, ifi_index);
  OFF(ifinfomsg, ifi_flags); OFF(ifinfomsg, ifi_change);
  SZ(nlattr); OFF(nlmsgerr, error);
  SZ(ethtool_drvinfo); OFF(ethtool_drvinfo, cmd); OFF(ethtool_drvinfo, driver);
  SZ(timeval);
  SZ(bridge_vlan_info); OFF(bridge_vlan_info, flags); OFF(bridge_vlan_info, vid);
  SZ(inotify_event); OFF(inotify_event, wd); OFF(inotify_event, mask); OFF(inotify_event, len);
  printf("\n}\n");
  return 0;
}
