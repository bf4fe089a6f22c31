"""Ray Serve wiring: thin deployments over serve_app, and build_app(args) -> Application."""
