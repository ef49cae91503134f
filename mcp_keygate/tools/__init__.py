"""The MCP surface, in small pieces: core tools, preset tools and prompts, resources, and the
request filters; `server.build_server` puts them together."""
