"""claude-peers for agent sessions: the stdio MCP server and the hook command."""
