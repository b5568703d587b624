"""Certificates, keys and TLS contexts; the PKI file layout on disk (SPEC §4)."""
