"""Who is calling and how much they may do: API keys (hashed), the principal of a request,
per-tenant rate limits and quotas, kept in PostgreSQL so every replica shares them."""
