// The kernel layer's public face. Nothing outside src/sys touches ffi-rs.
export { C, LAYOUT, CMSG_LEN, CMSG_SPACE } from './constants.js';
export { IfName, ifNameProblem } from './ifname.js';
export { Mac } from './mac.js';
export { createTap, tapInfo, closeTapSync, type Tap, type TapOptions } from './tap.js';
export { addPort, removePort, createBridge, deleteBridge, isBridge, exists, type AddPortOptions } from './bridge.js';
export { getIndex, indexOrZero, getMac, getMtu, setMac, setMtu, setUp, macIsFixed } from './netdev.js';
export {
  sendWithFds, recvWithFds, recvWithFdsAsync, closeAll, peerCred, peerGroups, peerPidfd, pidfdPid, SCM_MAX_FD,
  type PeerCred, type PeerPidfd, type Received,
} from './fdpass.js';
export { connectUnix, connectUnixAsync, sendAll, closeFd } from './unix.js';
export { LinkWatch, linkAlive, type TunReport } from './link-watch.js';
export { setPortIsolated, setLink, deleteLink, getLink, type LinkConfig, type LinkState, type TunState } from './rtnetlink.js';
export { sysFcntl as fcntl, sysSocketpair as socketpair } from './libc.js';
export { closeOnExecAll } from './fds.js';
export { createMacvtap, macvtapNode, openMacvtapQueues, statNode, isNodeOf, type MacvtapMode, type MacvtapNode, type MacvtapOptions } from './macvtap.js';
export { vlanFiltering, setVlanFiltering, addPortVlan, delPortVlan, type PortVlan } from './vlan.js';
export { OpenCloseWatch, type FileEvents } from './inotify.js';
