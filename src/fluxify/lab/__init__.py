"""The network-namespace test bed and the benchmark drivers."""
