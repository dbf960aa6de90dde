"""agent-tools: an MCP server whose tools map onto durable promises.

The server, job kinds and web pages arrive in later work; today the package holds the
configuration (where the store lives) and the ``agent-tools`` command.
"""

from agent_tools.config import DB_ENV, default_db_url, resolve_db_url

__all__ = ["DB_ENV", "default_db_url", "resolve_db_url"]
