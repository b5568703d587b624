"""Textual apps: thin views over the server and client state."""
