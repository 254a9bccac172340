"""The client of a `clipcls serve` server and the wire contract both sides share: the
connection and the server's facts, the requests and their checks (below the backends)."""
