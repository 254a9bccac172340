"""`clipcls serve`: one model kept loaded behind an HTTP API; a user of the library, like the
command line (its client and the requests it reads are in clipcls/client/)."""
