"""The host edge: TUN device, netlink state, nftables, sysctls. Every change has its undo."""
