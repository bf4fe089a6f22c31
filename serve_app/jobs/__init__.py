"""Durable work: the PostgreSQL job store and its SQL and migrations, audio and results in the
BlobStore, the JobWorker that runs queued jobs under leases, users' batches of files, and
webhooks. What a job runs is handed to the worker; this package never transcribes."""
