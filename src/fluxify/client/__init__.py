"""Client composition: control client, bonding and load-balance runners, settings."""
