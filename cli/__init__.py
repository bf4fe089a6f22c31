"""The `stt` command: serve the app on a local Ray cluster, prepare models, administer keys and
tenants (straight on the database, no Ray), and the client commands of a running service."""
