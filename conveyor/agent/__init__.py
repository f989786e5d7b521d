"""The polling agent, `conveyor agent run`: runs on a target machine, connects out to the server
only, and carries out the jobs of its own target (docs/targets.md).

It needs none of the server's database code: the HTTP client (`client`), the work it does
(`work`: scripts in their own process group, packages into versioned folders) and the loop
that keeps it polling across restarts (`main`).
"""
