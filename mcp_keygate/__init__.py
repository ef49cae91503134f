"""mcp-keygate: an MCP server that rotates LLM API keys and falls back across models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
