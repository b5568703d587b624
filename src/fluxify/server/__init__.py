"""Server composition: control server, session table and address pool, data plane, NAT."""
