//! Real MCP peers through the gateway: server-everything (stdio and Streamable HTTP), mcp-server-time, the Python SDK and the MCP Inspector CLI.
