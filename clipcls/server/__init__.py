"""`clipcls serve`: one model kept loaded behind an HTTP API, and the client the CLI uses."""
